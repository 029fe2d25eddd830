//! `[control]` limits: defaults, the reserved share that follows `max_clients`, explicit values.

use std::path::Path;
use std::time::Duration;

use isthmus_config::{parse_str, Control, LoadOptions};

fn control(section: &str) -> Control {
    let text =
        format!("[agent]\nname = \"gw\"\n[control]\nread_group = 0\nadmin_group = 0\n{section}");
    parse_str(
        &text,
        Path::new("/etc/isthmus/agentd.toml"),
        &LoadOptions::default(),
    )
    .unwrap_or_else(|r| panic!("{section:?} was refused: {r}"))
    .config
    .control
}

#[test]
fn the_defaults_give_each_user_32_of_128_slots_and_keep_16_for_admins() {
    let c = control("");
    assert_eq!(c.max_clients, 128);
    assert_eq!(c.max_clients_per_user, 32);
    assert_eq!(c.reserved_clients, 16);
    assert_eq!(c.head_timeout, Duration::from_secs(1));
    assert_eq!(c.request_timeout, Duration::from_secs(5));
}

#[test]
fn the_default_reserve_is_a_quarter_of_a_smaller_max_clients() {
    assert_eq!(control("max_clients = 16\n").reserved_clients, 4);
    assert_eq!(control("max_clients = 2\n").reserved_clients, 0);
    assert_eq!(control("max_clients = 1024\n").reserved_clients, 16);
}

#[test]
fn explicit_limits_are_taken_as_written() {
    let c = control(
        "max_clients = 10\nmax_clients_per_user = 3\nreserved_clients = 9\nhead_timeout = \"250ms\"\n",
    );
    assert_eq!(c.max_clients, 10);
    assert_eq!(c.max_clients_per_user, 3);
    assert_eq!(c.reserved_clients, 9);
    assert_eq!(c.head_timeout, Duration::from_millis(250));
}
