//! DNS replies (wire format) to an RFC 2136 UPDATE, signed with TSIG and unsigned, and to the query that reads a set.
//! The invariants are asserted in `isthmus_actions::fuzzing`, next to the parsers.

pub fn run(data: &[u8]) {
    isthmus_actions::fuzzing::dns_reply(data);
}
