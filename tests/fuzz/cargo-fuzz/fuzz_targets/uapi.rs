#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| isthmus_fuzz::uapi::run(data));
