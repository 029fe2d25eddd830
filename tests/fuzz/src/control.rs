//! A connection to the control socket: the caller (first byte: even root, odd a user in no
//! group) and the bytes it sends, through hyper, the table of endpoints, access, body parsing
//! and the event loop's handlers. The shell and the invariants are in
//! `isthmus_agentd::fuzzing::control`.

pub fn run(data: &[u8]) {
    isthmus_agentd::fuzzing::control(data);
}
