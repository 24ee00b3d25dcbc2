#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tailwater_fuzz::cluster_stream_page(data));
