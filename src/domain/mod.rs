//! The pure core: no AWS types, no I/O.

pub(crate) mod backlog;
pub(crate) mod dead_letter;
pub(crate) mod event;
pub(crate) mod failure;
pub(crate) mod fifo;
pub(crate) mod forecast;
pub(crate) mod kafka;
pub(crate) mod outcome;
pub(crate) mod run;
pub(crate) mod stamp;

/// Runs every decoder on arbitrary bytes, as the fuzz target and its corpus
/// replay do: the bytes as a record value's text, as the raw bytes behind a
/// base64 value, and as a whole Lambda event. Nothing here may panic.
#[doc(hidden)]
pub fn exercise_decoders(data: &[u8]) {
    use base64::Engine as _;
    let text = String::from_utf8_lossy(data);
    let _ = event::decode_json(&text);
    let encoded = serde_json::Value::from(base64::engine::general_purpose::STANDARD.encode(data));
    let _ = event::decode_value(Some(&encoded));
    let _ = event::decode_value(Some(&serde_json::Value::from(text.as_ref())));
    if let Ok(payload) = serde_json::from_slice::<serde_json::Value>(data)
        && let Ok(partitions) = kafka::decode_envelope(payload)
    {
        for message in partitions.iter().flat_map(|p| &p.messages) {
            let _ = message.correlation_header();
            if let Ok(event::DecodedValue::Consolidation(event)) =
                event::decode_value(message.value.as_ref())
            {
                let plan = stamp::StampPlan::for_event(&event, chrono::Utc::now());
                let _ = plan.selection.needs_stamp(Some(event.execution.sequence()));
            }
        }
    }
}
