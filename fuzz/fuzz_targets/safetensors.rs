//! Fuzz target: `checks::safetensors` on every input, within the allocation allowance.
#![no_main]

use deriv_fuzz::{checks, within_allowance, Counting};

#[global_allocator]
static ALLOC: Counting = Counting;

libfuzzer_sys::fuzz_target!(|data: &[u8]| within_allowance(data, checks::safetensors));
