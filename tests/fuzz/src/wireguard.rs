//! Datagrams on a link's WireGuard port, through agentd's receive path under fixed keys:
//! boringtun's decapsulation, the allowed-IP check and the coalescing into TUN writes. The input
//! format and the invariants are in `isthmus_agentd::fuzzing::wireguard`.

pub fn run(data: &[u8]) {
    isthmus_agentd::fuzzing::wireguard(data);
}
