//! `Relay`: a loopback relay in front of a server that cuts connections.

use std::net::{TcpListener, TcpStream};

/// A TCP relay on loopback in front of a server, to make network blips:
/// while it is down, open connections are cut and new ones closed at once.
/// Also the address of a server that does not exist yet
/// ([`Relay::without_server`]): the relay holds the port from the start, so
/// nothing else can take it before the server comes.
pub struct Relay {
    pub port: u16,
    state: std::sync::Arc<std::sync::Mutex<RelayState>>,
}

#[derive(Default)]
struct RelayState {
    down: bool,
    /// The server's port; none yet for [`Relay::without_server`].
    target: Option<u16>,
    open: Vec<TcpStream>,
    /// Connections closed at once because the relay was down.
    refused: u64,
}

impl Relay {
    pub fn start(target: u16) -> Relay {
        let relay = Relay::without_server();
        relay.connect_to(target);
        relay
    }

    /// A relay with no server behind it yet: every connection is closed at
    /// once until [`Relay::connect_to`].
    pub fn without_server() -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = std::sync::Arc::new(std::sync::Mutex::new(RelayState::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let mut state = shared.lock().unwrap();
                let target = match state.target {
                    Some(target) if !state.down => target,
                    _ => {
                        state.refused += 1;
                        continue; // dropped: closed at once
                    }
                };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
                state.open.extend([client, server]);
            }
        });
        Relay { port, state }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Relays every connection from now on to the server on `port`.
    pub fn connect_to(&self, port: u16) {
        self.state.lock().unwrap().target = Some(port);
    }

    /// How many connections were closed at once while the relay was down.
    pub fn refused(&self) -> u64 {
        self.state.lock().unwrap().refused
    }

    /// Cuts every open connection and refuses new ones (`true`), or lets
    /// them through again (`false`).
    pub fn set_down(&self, down: bool) {
        let mut state = self.state.lock().unwrap();
        state.down = down;
        if down {
            for stream in state.open.drain(..) {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}
