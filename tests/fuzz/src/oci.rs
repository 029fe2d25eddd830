//! OCI answer bodies (JSON): DNS record sets, error answers, VCN route rules and the plan that rewrites them.
//! The invariants are asserted in `isthmus_actions::fuzzing`, next to the parsers.

pub fn run(data: &[u8]) {
    isthmus_actions::fuzzing::oci_answer(data);
}
