//! AWS answer bodies (Route 53 and EC2, XML): the XML reader, error answers, the record set and the route table read from them.
//! The invariants are asserted in `isthmus_actions::fuzzing`, next to the parsers.

pub fn run(data: &[u8]) {
    isthmus_actions::fuzzing::aws_answer(data);
}
