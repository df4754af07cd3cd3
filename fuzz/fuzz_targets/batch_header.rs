//! Batch headers as a relay sees them: `decode_header` never panics; a header it accepts passes
//! `check_limits` for the batch's length (the relay's cheap check is part of decoding a header)
//! and its cost fits the budget; reserved-name and declared-type checks never panic on any name,
//! and a reduced type reduces to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_protocol::batch::codec::{
    check_limits, decode_header, decoded_budget, header_cost, Limits,
};
use outpost_protocol::batch::{decl_type, names};

fuzz_target!(|data: &[u8]| {
    let Ok(header) = decode_header(data, &Limits::default()) else {
        return;
    };
    assert_eq!(check_limits(&header, data.len()), Ok(()));
    assert!(header_cost(&header) <= decoded_budget(data.len()));
    for t in &header.tables {
        let _ = names::is_reserved(&t.name);
        for c in &t.columns {
            let _ = names::is_reserved(&c.name);
            if let Some(d) = decl_type::reduce(&c.decl_type) {
                assert_eq!(decl_type::reduce(d.sql()), Some(d));
            }
        }
    }
});
