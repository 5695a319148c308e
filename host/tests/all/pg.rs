//! The tests' PostgreSQL: a cluster of each test's own ([`clearance_host::pgcluster`]),
//! in its scratch directory, stopped and removed when the test ends.

use clearance_host::pgcluster::Cluster;

/// A running cluster for one test.
pub(crate) struct Pg(pub(crate) Cluster);

impl Pg {
    /// A new cluster, started.
    pub(crate) fn start(name: &str) -> Pg {
        let dir = super::scratch(&format!("pg-{name}"));
        Pg(Cluster::start(&dir).unwrap())
    }

    /// Starts the server again.
    pub(crate) fn up(&self) {
        self.0.up().unwrap();
    }

    /// Stops the server, ending open connections.
    pub(crate) fn down(&self) {
        self.0.down().unwrap();
    }

    /// A new database of the cluster: its URL.
    pub(crate) fn database(&self, name: &str) -> String {
        self.0.database(name).unwrap()
    }

    /// Runs SQL on database `name`; panics if it fails.
    pub(crate) fn sql(&self, name: &str, sql: &str) -> String {
        self.0.sql(name, sql).unwrap()
    }
}
