//! The pure core: no AWS types, no I/O.

pub mod dead_letter;
pub mod event;
pub mod kafka;
pub mod outcome;
pub mod stamp;
