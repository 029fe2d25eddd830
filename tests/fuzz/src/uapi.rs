//! A client's bytes on a link's UAPI socket (what `wg show` and `wg set` write), answered by
//! agentd's serving loop over an in-memory stream. The invariants are asserted in
//! `isthmus_agentd::fuzzing::uapi`.

pub fn run(data: &[u8]) {
    isthmus_agentd::fuzzing::uapi(data);
}
