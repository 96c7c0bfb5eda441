//! The verifier's state: an SQLite database (`verifier.sqlite3`) under the
//! state directory, with enrolled nodes, the verdict history and the policy
//! (reference values as TOML text).
//!
//! The schema version is SQLite's `user_version`; every change runs in a
//! transaction, and the database is in WAL mode with full sync, so a crash
//! loses at most the change in flight, never earlier ones.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};

/// Version of the schema below.
pub const SCHEMA_VERSION: i64 = 1;
/// File name of the database inside the state directory.
pub const DATABASE_FILE: &str = "verifier.sqlite3";

const SCHEMA: &str = "
CREATE TABLE nodes (
    addr              TEXT PRIMARY KEY,
    ek_public         BLOB NOT NULL,   -- marshaled TPMT_PUBLIC
    ek_certificate    BLOB NOT NULL,   -- DER
    ak_public         BLOB NOT NULL,   -- marshaled TPMT_PUBLIC
    ak_name           BLOB NOT NULL,
    enrolled_at       INTEGER NOT NULL, -- unix seconds
    activation_proven INTEGER NOT NULL  -- 1: the AK passed credential activation
);
CREATE TABLE verdicts (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    addr    TEXT NOT NULL,
    at      INTEGER NOT NULL,          -- unix seconds
    verdict TEXT NOT NULL,             -- trusted | untrusted
    reasons TEXT NOT NULL              -- JSON array of reason codes
);
CREATE INDEX verdicts_by_addr ON verdicts (addr, id);
CREATE TABLE policy (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    toml       TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
";

/// Why the state could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create state directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("state database has schema version {0}, this verifier knows {SCHEMA_VERSION}")]
    SchemaVersion(i64),
}

/// An enrolled node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub addr: String,
    pub ek_public: Vec<u8>,
    pub ek_certificate: Vec<u8>,
    pub ak_public: Vec<u8>,
    pub ak_name: Vec<u8>,
    pub enrolled_at: i64,
    pub activation_proven: bool,
}

/// One recorded verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictRecord {
    pub addr: String,
    pub at: i64,
    pub verdict: String,
    pub reasons: Vec<String>,
}

/// The default state directory: `$AVM_VERIFIER_STATE`, else
/// `$XDG_STATE_HOME/avm-verifier`, else `~/.local/state/avm-verifier`.
pub fn default_state_dir() -> PathBuf {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("AVM_VERIFIER_STATE") {
        return dir.into();
    }
    if let Some(dir) = var("XDG_STATE_HOME") {
        return PathBuf::from(dir).join("avm-verifier");
    }
    let home = var("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/state/avm-verifier")
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The open state database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut conn = Connection::open(dir.join(DATABASE_FILE))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let tx = conn.transaction()?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        match version {
            0 => {
                tx.execute_batch(SCHEMA)?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            }
            SCHEMA_VERSION => {}
            other => return Err(StoreError::SchemaVersion(other)),
        }
        tx.commit()?;
        Ok(Self { conn })
    }

    /// Records (or replaces, on re-enrolment) a node.
    pub fn enroll(&mut self, node: &NodeRecord) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO nodes
             (addr, ek_public, ek_certificate, ak_public, ak_name, enrolled_at, activation_proven)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                node.addr,
                node.ek_public,
                node.ek_certificate,
                node.ak_public,
                node.ak_name,
                node.enrolled_at,
                node.activation_proven,
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn node(&self, addr: &str) -> Result<Option<NodeRecord>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT addr, ek_public, ek_certificate, ak_public, ak_name, enrolled_at,
                        activation_proven FROM nodes WHERE addr = ?1",
                [addr],
                node_from_row,
            )
            .optional()?)
    }

    pub fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT addr, ek_public, ek_certificate, ak_public, ak_name, enrolled_at,
                    activation_proven FROM nodes ORDER BY addr",
        )?;
        let rows = stmt.query_map([], node_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Appends a verdict to the history.
    pub fn record_verdict(&mut self, record: &VerdictRecord) -> Result<(), StoreError> {
        let reasons = serde_json::to_string(&record.reasons).unwrap_or_else(|_| "[]".into());
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO verdicts (addr, at, verdict, reasons) VALUES (?1, ?2, ?3, ?4)",
            params![record.addr, record.at, record.verdict, reasons],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn last_verdict(&self, addr: &str) -> Result<Option<VerdictRecord>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT addr, at, verdict, reasons FROM verdicts WHERE addr = ?1
                 ORDER BY id DESC LIMIT 1",
                [addr],
                |row| {
                    let reasons: String = row.get(3)?;
                    Ok(VerdictRecord {
                        addr: row.get(0)?,
                        at: row.get(1)?,
                        verdict: row.get(2)?,
                        reasons: serde_json::from_str(&reasons).unwrap_or_default(),
                    })
                },
            )
            .optional()?)
    }

    /// The stored policy TOML, if any.
    pub fn policy(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT toml FROM policy WHERE id = 1", [], |r| r.get(0))
            .optional()?)
    }

    pub fn set_policy(&mut self, toml: &str) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO policy (id, toml, updated_at) VALUES (1, ?1, ?2)",
            params![toml, now()],
        )?;
        tx.commit()?;
        Ok(())
    }
}

fn node_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<NodeRecord> {
    Ok(NodeRecord {
        addr: row.get(0)?,
        ek_public: row.get(1)?,
        ek_certificate: row.get(2)?,
        ak_public: row.get(3)?,
        ak_name: row.get(4)?,
        enrolled_at: row.get(5)?,
        activation_proven: row.get(6)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(addr: &str) -> NodeRecord {
        NodeRecord {
            addr: addr.into(),
            ek_public: vec![1, 2],
            ek_certificate: vec![3],
            ak_public: vec![4, 5, 6],
            ak_name: vec![0, 0x0b, 7],
            enrolled_at: 1234,
            activation_proven: true,
        }
    }

    #[test]
    fn nodes_verdicts_and_policy_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = Store::open(dir.path()).unwrap();
            store.enroll(&node("127.0.0.1:7000")).unwrap();
            store.enroll(&node("127.0.0.1:6000")).unwrap();
            for verdict in ["untrusted", "trusted"] {
                store
                    .record_verdict(&VerdictRecord {
                        addr: "127.0.0.1:7000".into(),
                        at: 99,
                        verdict: verdict.into(),
                        reasons: vec!["nonce-mismatch".into()],
                    })
                    .unwrap();
            }
            store.set_policy("version = 1\n").unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.node("127.0.0.1:7000").unwrap(),
            Some(node("127.0.0.1:7000"))
        );
        assert_eq!(store.node("127.0.0.1:1").unwrap(), None);
        let addrs: Vec<String> = store.nodes().unwrap().into_iter().map(|n| n.addr).collect();
        assert_eq!(addrs, ["127.0.0.1:6000", "127.0.0.1:7000"]);
        let last = store.last_verdict("127.0.0.1:7000").unwrap().unwrap();
        assert_eq!(last.verdict, "trusted");
        assert_eq!(last.reasons, ["nonce-mismatch"]);
        assert_eq!(store.last_verdict("127.0.0.1:6000").unwrap(), None);
        assert_eq!(store.policy().unwrap().as_deref(), Some("version = 1\n"));
    }

    #[test]
    fn re_enrolment_replaces_the_node() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        store.enroll(&node("n:1")).unwrap();
        let mut again = node("n:1");
        again.ak_name = vec![9];
        store.enroll(&again).unwrap();
        assert_eq!(store.nodes().unwrap(), vec![again]);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
        conn.pragma_update(None, "user_version", 7).unwrap();
        drop(conn);
        assert!(matches!(
            Store::open(dir.path()).unwrap_err(),
            StoreError::SchemaVersion(7)
        ));
    }
}
