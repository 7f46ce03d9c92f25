//! libFuzzer entry for [`tend_fuzz::http_response`]; the logic lives in the library so that the
//! seed corpus also replays on stable (`scripts/fuzz replay`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tend_fuzz::http_response(data));
