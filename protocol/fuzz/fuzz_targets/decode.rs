//! Fuzz target: decoding arbitrary bytes returns Ok or a typed error and never panics; whatever
//! decodes re-encodes to a frame that decodes to the same message (reserved bytes are not kept),
//! and `decode_vec` agrees with `decode`.
#![no_main]

use cosim_protocol::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let a = Message::decode(data);
    let b = Message::decode_vec(data.to_vec());
    assert_eq!(a, b);
    if let Ok(msg) = a {
        assert_eq!(Message::decode(&msg.encode_to_vec()), Ok(msg), "encode/decode must round trip");
    }
});
