//! How far a fan-out got, as a low-water mark over its pages: a page is done
//! when every request carrying its keys finished every key (written,
//! already applied or gone), and the mark is the end of the longest run of
//! done pages from the start. Updates cross no page (a request holds keys of
//! one page) but finish out of order, so the last page read says nothing;
//! the mark does. Its counts are those of the pages before it, never
//! running totals, so a run resumed from it counts nothing twice.

use std::collections::VecDeque;

use crate::domain::run::RunCounts;
use crate::domain::stamp::StampResult;

/// A page's place in the fan-out's order of pages.
pub(super) type PageNumber = u64;

struct Page<C> {
    /// Where reading resumes after this page; `None`: the selection's last page.
    next: Option<C>,
    /// Requests of this page's keys not finished yet.
    open: u32,
    /// Every key of the page is in a request.
    dispatched: bool,
    /// A request of this page ended before finishing its keys: the page
    /// never becomes done in this fan-out.
    broken: bool,
    counts: RunCounts,
}

/// The pages of one fan-out, from the first not yet done.
pub(super) struct Watermark<C> {
    pages: VecDeque<Page<C>>,
    /// The number of `pages[0]`.
    first: PageNumber,
    /// Counts of the done pages.
    done: RunCounts,
    /// Where reading resumes after the done pages (`None` before any).
    mark: Option<C>,
    /// The mark moved since [`Watermark::take_moved`] was last asked.
    moved: bool,
}

impl<C> Default for Watermark<C> {
    fn default() -> Self {
        Self {
            pages: VecDeque::new(),
            first: 0,
            done: RunCounts::default(),
            mark: None,
            moved: false,
        }
    }
}

impl<C: Clone> Watermark<C> {
    /// A page was read: `already_applied` of its records needed no write.
    pub(super) fn page_read(&mut self, already_applied: u64, next: Option<C>) -> PageNumber {
        self.pages.push_back(Page {
            next,
            open: 0,
            dispatched: false,
            broken: false,
            counts: RunCounts {
                already_applied,
                ..RunCounts::default()
            },
        });
        self.first + self.pages.len() as u64 - 1
    }

    pub(super) fn request_started(&mut self, page: PageNumber) {
        if let Some(page) = self.page(page) {
            page.open += 1;
        }
    }

    /// Every key of `page` is in a request.
    pub(super) fn page_dispatched(&mut self, page: PageNumber) {
        if let Some(page) = self.page(page) {
            page.dispatched = true;
        }
        self.advance();
    }

    /// A request of `page` ended: `finished` when it finished every key.
    pub(super) fn request_ended(
        &mut self,
        page: PageNumber,
        results: &[StampResult],
        finished: bool,
    ) {
        if let Some(page) = self.page(page) {
            page.open = page.open.saturating_sub(1);
            page.broken |= !finished;
            for result in results {
                match result {
                    StampResult::Written => page.counts.stamped += 1,
                    StampResult::AlreadyApplied => page.counts.already_applied += 1,
                    StampResult::Missing => page.counts.gone += 1,
                }
            }
        }
        self.advance();
    }

    /// Where reading resumes after the done pages, and their counts.
    pub(super) fn mark(&self) -> Option<(&C, RunCounts)> {
        self.mark.as_ref().map(|mark| (mark, self.done))
    }

    /// Whether the mark moved since this was last asked.
    pub(super) fn take_moved(&mut self) -> bool {
        std::mem::take(&mut self.moved)
    }

    fn page(&mut self, number: PageNumber) -> Option<&mut Page<C>> {
        let index = usize::try_from(number.checked_sub(self.first)?).ok()?;
        self.pages.get_mut(index)
    }

    fn advance(&mut self) {
        while let Some(page) = self.pages.front() {
            if !(page.dispatched && page.open == 0 && !page.broken) {
                return;
            }
            let Some(page) = self.pages.pop_front() else {
                return;
            };
            self.first += 1;
            // The last page has no next position: nothing is left to resume,
            // and the mark keeps the counts of the pages before it.
            if let Some(next) = page.next {
                self.done = self.done.then(&page.counts);
                self.mark = Some(next);
                self.moved = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use StampResult::{AlreadyApplied, Missing, Written};

    fn counts(stamped: u64, already_applied: u64, gone: u64) -> RunCounts {
        RunCounts {
            stamped,
            already_applied,
            gone,
            left_for_next: None,
        }
    }

    #[test]
    fn the_mark_waits_for_the_slowest_request_of_the_earliest_page() {
        let mut marks = Watermark::default();
        let first = marks.page_read(1, Some("after-1"));
        marks.request_started(first);
        marks.request_started(first);
        marks.page_dispatched(first);
        let second = marks.page_read(0, Some("after-2"));
        marks.request_started(second);
        marks.page_dispatched(second);
        // The second page finishes first: no mark yet.
        marks.request_ended(second, &[Written, Written], true);
        marks.request_ended(first, &[Written], true);
        assert!(marks.mark().is_none());
        assert!(!marks.take_moved());
        // The first page's last request: both pages are done.
        marks.request_ended(first, &[AlreadyApplied, Missing], true);
        assert_eq!(marks.mark(), Some((&"after-2", counts(3, 2, 1))));
        assert!(marks.take_moved());
        assert!(!marks.take_moved(), "asked once per move");
    }

    #[test]
    fn a_page_not_wholly_dispatched_is_not_done() {
        let mut marks = Watermark::default();
        let page = marks.page_read(0, Some("after-1"));
        marks.request_started(page);
        marks.request_ended(page, &[Written], true);
        assert!(marks.mark().is_none(), "more keys of the page may follow");
        marks.page_dispatched(page);
        assert_eq!(marks.mark(), Some((&"after-1", counts(1, 0, 0))));
    }

    #[test]
    fn a_request_that_did_not_finish_holds_the_mark_before_its_page_for_good() {
        let mut marks = Watermark::default();
        let first = marks.page_read(0, Some("after-1"));
        marks.request_started(first);
        marks.page_dispatched(first);
        marks.request_ended(first, &[Written], true);
        let second = marks.page_read(0, Some("after-2"));
        marks.request_started(second);
        marks.page_dispatched(second);
        // Part written, then failed or stopped: its written keys count for
        // nothing here (the condition declines them on the retry).
        marks.request_ended(second, &[Written], false);
        let third = marks.page_read(4, Some("after-3"));
        marks.page_dispatched(third);
        assert_eq!(marks.mark(), Some((&"after-1", counts(1, 0, 0))));
    }

    #[test]
    fn pages_with_nothing_to_write_are_done_once_dispatched_and_the_last_has_no_mark() {
        let mut marks: Watermark<&str> = Watermark::default();
        let first = marks.page_read(5, Some("after-1"));
        marks.page_dispatched(first);
        assert_eq!(marks.mark(), Some((&"after-1", counts(0, 5, 0))));
        let last = marks.page_read(2, None);
        marks.page_dispatched(last);
        // The whole selection is done (the fan-out completes its run); the
        // mark and its counts stay those of the pages before the last.
        assert_eq!(marks.mark(), Some((&"after-1", counts(0, 5, 0))));
    }
}
