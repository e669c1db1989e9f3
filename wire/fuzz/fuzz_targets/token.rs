//! The join token body, which `agentd enroll` and `flotilla login` decode from text a person pasted.

#![no_main]

use flotilla_wire::token::{decode_token_body, encode_token_body};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = decode_token_body(data) {
        let again = encode_token_body(&body);
        let back = decode_token_body(&again).expect("a decoded token body re-encodes");
        assert_eq!(encode_token_body(&back), again);
    }
});
