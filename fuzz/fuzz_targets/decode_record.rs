//! No input may panic the record decoders: a Kafka record's value, a whole
//! Lambda event, or anything in between.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    consolidation_updater::testing::exercise_decoders(data);
});
