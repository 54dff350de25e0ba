//! A local mesh in one process: store peers and users on loopback, introduced to each other.
//!
//! `kith demo` runs one for people to try Kith on one machine; the simulation harness in
//! `tests/` builds larger ones from the same code, so what the demo shows is what is tested.

use std::{path::PathBuf, time::Duration};

use crate::{operator, Config, RunError, RunningNode};

/// What to build.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    /// Where every peer's data directory goes (one subdirectory each).
    pub dir: PathBuf,
    /// How many store-and-forward peers.
    pub stores: usize,
    /// The users' names (each gets a node).
    pub users: Vec<String>,
    /// API ports for the users, in order (0 or missing: any free port).
    pub api_ports: Vec<u16>,
    /// Heartbeat interval of the users' nodes.
    pub heartbeat: Duration,
}

/// Why a mesh could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshError {
    /// A store peer did not start.
    #[error("store peer {index}: {source}")]
    Store {
        /// Which one.
        index: usize,
        /// Why.
        source: operator::RunError,
    },
    /// A user's node did not start.
    #[error("node {name}: {source}")]
    Node {
        /// Whose.
        name: String,
        /// Why.
        source: RunError,
    },
    /// Introducing two users failed.
    #[error("introducing {a} and {b}: {reason}")]
    Introduce {
        /// One user.
        a: String,
        /// The other.
        b: String,
        /// Why.
        reason: String,
    },
}

/// A running mesh.
pub struct Mesh {
    /// The store peers, in start order.
    pub stores: Vec<operator::Running>,
    /// The users' nodes with their names, in the order asked for.
    pub users: Vec<(String, RunningNode)>,
}

impl Mesh {
    /// Starts the store peers (each joining the ones before it), then the users' nodes
    /// (bootstrapping from every store peer), and introduces every pair of users.
    pub async fn start(cfg: MeshConfig) -> Result<Mesh, MeshError> {
        let mut stores: Vec<operator::Running> = Vec::with_capacity(cfg.stores);
        let mut addrs = Vec::new();
        for index in 0..cfg.stores {
            let mut sc = operator::Config::loopback_store(cfg.dir.join(format!("store{index}")));
            sc.peers = addrs.clone();
            let s = operator::start(sc)
                .await
                .map_err(|source| MeshError::Store { index, source })?;
            addrs.extend(s.listen_addrs.iter().cloned());
            stores.push(s);
        }
        let mut users = Vec::with_capacity(cfg.users.len());
        for (i, name) in cfg.users.iter().enumerate() {
            let mut nc = Config::loopback(cfg.dir.join(name));
            nc.bootstrap = addrs.clone();
            nc.heartbeat = cfg.heartbeat;
            if let Some(port) = cfg.api_ports.get(i).copied().filter(|p| *p != 0) {
                nc.api.set_port(port);
            }
            let node = match crate::start(nc.clone()).await {
                Ok(n) => n,
                // A fixed port in use: take any free one rather than fail the demo.
                Err(RunError::Io { .. }) if nc.api.port() != 0 => {
                    nc.api.set_port(0);
                    crate::start(nc).await.map_err(|source| MeshError::Node {
                        name: name.clone(),
                        source,
                    })?
                }
                Err(source) => {
                    return Err(MeshError::Node {
                        name: name.clone(),
                        source,
                    })
                }
            };
            users.push((name.clone(), node));
        }
        let mesh = Mesh { stores, users };
        mesh.introduce_all().await?;
        Ok(mesh)
    }

    /// Adds every user to every other user's contacts (by invite, with their names).
    pub async fn introduce_all(&self) -> Result<(), MeshError> {
        let mut invites = Vec::with_capacity(self.users.len());
        for (name, n) in &self.users {
            let me = n.node.me().await.map_err(|e| MeshError::Introduce {
                a: name.clone(),
                b: name.clone(),
                reason: e.to_string(),
            })?;
            invites.push(me.invite);
        }
        for (i, (a, na)) in self.users.iter().enumerate() {
            for (j, (b, _)) in self.users.iter().enumerate() {
                if i == j {
                    continue;
                }
                na.node
                    .add_contact(&invites[j], Some(b.clone()))
                    .await
                    .map_err(|e| MeshError::Introduce {
                        a: a.clone(),
                        b: b.clone(),
                        reason: e.to_string(),
                    })?;
            }
        }
        Ok(())
    }

    /// The node of the user called `name`.
    pub fn user(&self, name: &str) -> Option<&RunningNode> {
        self.users.iter().find(|(n, _)| n == name).map(|(_, r)| r)
    }

    /// Stops every node and store peer.
    pub async fn shutdown(self) {
        for (name, n) in self.users {
            if let Err(e) = n.shutdown().await {
                tracing::warn!(%name, error = %e, "node did not stop cleanly");
            }
        }
        for s in self.stores {
            s.shutdown().await;
        }
    }
}
