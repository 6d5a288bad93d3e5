//! Arbitrary bytes, split into frames, through `Assembler::push_slot` and `assemble`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pbx_core_fuzz::assemble_input(data));
