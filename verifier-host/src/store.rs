//! The verifier's state: an SQLite database (`verifier.sqlite3`) under the
//! state directory, with enrolled nodes, the verdict history and the policy
//! (reference values as TOML text).
//!
//! The schema version is SQLite's `user_version`; every change runs in a
//! transaction, and the database is in WAL mode with full sync, so a crash
//! loses at most the change in flight, never earlier ones.
//!
//! A node's identity is its EK: at most one enrolled address per EK (a
//! unique index), and every change of a node's address or keys is kept in
//! `key_changes`. The policy carries a revision so that a read-modify-write
//! (`policy learn`) can tell that somebody changed it in between, and a
//! verifier that holds the policy parsed can tell whether it is still the
//! stored one without reading it (a trigger bumps the revision of any
//! change of the text, also one made with another SQLite client, and no
//! revision is ever used for a second text, also across a deleted row).
//! `policy_snapshot` holds the policy compiled (`policy_snapshot`) for the
//! revision it was taken of; triggers delete it whenever the policy row
//! changes, so it is never older than the text.
//!
//! `measurement_logs` keeps, per node, the part of its A-VM measurement
//! log that a quote proved, with the TPM's reset and restart counts of
//! that quote, so the next `attest` asks only for the records after it
//! (a restart of the verifier loses nothing).
//!
//! `monitor_nodes`, `monitor_events` and `revocations` are the history of
//! `avm-verifier monitor`: each node's monitored verdict and whether its
//! revocation action ran, every event a node pushed, every revocation run
//! with its outcome. A restarted monitor resumes from them and never runs
//! a revocation again that it already started.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};

/// Version of the schema below.
pub const SCHEMA_VERSION: i64 = 8;
/// File name of the database inside the state directory.
pub const DATABASE_FILE: &str = "verifier.sqlite3";

const SCHEMA: &str = "
CREATE TABLE nodes (
    addr              TEXT PRIMARY KEY,
    ek_name           BLOB NOT NULL UNIQUE, -- TPM name of the EK: the node's identity
    ek_public         BLOB NOT NULL,   -- marshaled TPMT_PUBLIC
    ek_certificate    BLOB NOT NULL,   -- DER
    ak_public         BLOB NOT NULL,   -- marshaled TPMT_PUBLIC
    ak_name           BLOB NOT NULL,
    enrolled_at       INTEGER NOT NULL, -- unix seconds
    activation_proven INTEGER NOT NULL  -- 1: the AK passed credential activation
);
CREATE INDEX nodes_by_ak_name ON nodes (ak_name);
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
    updated_at INTEGER NOT NULL,
    revision   INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE key_changes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,      -- unix seconds
    kind        TEXT NOT NULL,         -- moved | keys-replaced | duplicate-ek-dropped
    old_addr    TEXT NOT NULL,
    new_addr    TEXT,
    old_ek_name BLOB NOT NULL,
    new_ek_name BLOB,
    old_ak_name BLOB NOT NULL,
    new_ak_name BLOB
);
CREATE TABLE measurement_logs (
    addr          TEXT PRIMARY KEY,
    ek_name       BLOB NOT NULL,     -- the node's identity when it was stored
    ak_name       BLOB NOT NULL,
    reset_count   INTEGER NOT NULL,  -- the quote's clock info (as quoted)
    restart_count INTEGER NOT NULL,
    records       INTEGER NOT NULL,  -- proven records in `log`
    log           BLOB NOT NULL,     -- those records, IMA binary form
    updated_at    INTEGER NOT NULL
);
CREATE TABLE monitor_nodes (
    addr        TEXT PRIMARY KEY,
    verdict     TEXT NOT NULL,         -- trusted | untrusted
    reasons     TEXT NOT NULL,         -- JSON array of reason codes
    since       INTEGER NOT NULL,      -- unix seconds: when it turned so
    revoked_at  INTEGER,               -- unix seconds: revocation started (untrusted only)
    updated_at  INTEGER NOT NULL
);
CREATE TABLE monitor_events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    addr         TEXT NOT NULL,
    at_ms        INTEGER NOT NULL,     -- unix milliseconds, when it arrived
    record_index INTEGER NOT NULL,     -- in the node's measurement log
    pcr          INTEGER NOT NULL,
    name         TEXT NOT NULL,        -- as pushed (a hint, the log is proof)
    latency_ms   REAL                  -- event arrival to the verdict after it
);
CREATE INDEX monitor_events_by_addr ON monitor_events (addr, id);
CREATE TABLE revocations (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    addr     TEXT NOT NULL,
    at       INTEGER NOT NULL,         -- unix seconds
    reasons  TEXT NOT NULL,            -- JSON array: why the node was untrusted
    action   TEXT NOT NULL,            -- command | webhook
    outcome  TEXT                      -- NULL while running, then e.g. exit 0, http 200, error ...
);
";

/// A node's verdict as `monitor` keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorNode {
    pub addr: String,
    pub verdict: String,
    pub reasons: Vec<String>,
    /// Unix seconds when the node turned `verdict`.
    pub since: i64,
    /// Unix seconds when its revocation started (only while untrusted).
    pub revoked_at: Option<i64>,
}

/// An event a node pushed.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorEvent {
    pub addr: String,
    pub at_ms: i64,
    pub record_index: u32,
    pub pcr: u8,
    pub name: String,
    pub latency_ms: Option<f64>,
}

/// One revocation action run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub id: i64,
    pub addr: String,
    pub at: i64,
    pub reasons: Vec<String>,
    pub action: String,
    pub outcome: Option<String>,
}

/// The proven prefix of a node's measurement log, as kept in the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLog {
    pub addr: String,
    pub ek_name: Vec<u8>,
    pub ak_name: Vec<u8>,
    /// The clock info of the quote that proved it (obfuscated by the TPM
    /// for keys outside the endorsement hierarchy, but stable per key).
    pub reset_count: u32,
    pub restart_count: u32,
    /// Records in `log`.
    pub records: u32,
    pub log: Vec<u8>,
}

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

impl NodeRecord {
    /// The EK's TPM name (SHA-256 nameAlg || digest of its TPMT_PUBLIC):
    /// the node's identity.
    pub fn ek_name(&self) -> Vec<u8> {
        tpm_name(&self.ek_public)
    }
}

/// The TPM name of a marshaled TPMT_PUBLIC whose nameAlg is SHA-256 (the
/// only one enrolment accepts).
pub fn tpm_name(public: &[u8]) -> Vec<u8> {
    let mut name = avm_attest::tpm::alg::SHA256.to_be_bytes().to_vec();
    name.extend_from_slice(&openssl::sha::sha256(public));
    name
}

/// One recorded verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictRecord {
    pub addr: String,
    pub at: i64,
    pub verdict: String,
    pub reasons: Vec<String>,
}

/// What happened to an enrolled node's address or keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyChangeKind {
    /// The same EK was enrolled under a new address (`enroll --move`).
    Moved,
    /// The address was re-enrolled with another EK or AK
    /// (`enroll --replace-keys`).
    KeysReplaced,
    /// Migrating a version 1 state found one EK under several addresses;
    /// only the newest enrolment was kept.
    DuplicateEkDropped,
}

impl KeyChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Moved => "moved",
            Self::KeysReplaced => "keys-replaced",
            Self::DuplicateEkDropped => "duplicate-ek-dropped",
        }
    }
}

/// One entry of the key-change history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChange {
    pub at: i64,
    pub kind: String,
    pub old_addr: String,
    pub new_addr: Option<String>,
    pub old_ek_name: Vec<u8>,
    pub new_ek_name: Option<Vec<u8>>,
    pub old_ak_name: Vec<u8>,
    pub new_ak_name: Option<Vec<u8>>,
}

/// The stored policy and its revision (bumped by every change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPolicy {
    pub toml: String,
    pub revision: i64,
}

/// The outcome of a conditional policy write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyWrite {
    /// Written; the new revision.
    Written(i64),
    /// Somebody changed the policy since the expected revision: nothing
    /// was written.
    Conflict,
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

const NODE_COLUMNS: &str =
    "addr, ek_public, ek_certificate, ak_public, ak_name, enrolled_at, activation_proven";

/// Any change of the policy text bumps its revision: the verifier's own
/// writes bump it themselves, this catches an `UPDATE` made by hand (or by
/// another tool), so a verifier holding the parsed policy of revision N
/// never keeps using it after the text changed.
const POLICY_REVISION_TRIGGER: &str = "
CREATE TRIGGER policy_revision_follows_text AFTER UPDATE OF toml ON policy
WHEN NEW.revision = OLD.revision
BEGIN
    UPDATE policy SET revision = OLD.revision + 1 WHERE id = NEW.id;
END;";

/// A revision is never used twice (schema version 8): a verifier holding
/// the policy prepared at revision N (`crate::policy_cache`) takes the
/// stored one for it while the revision is N, so a policy row deleted and
/// inserted again (it would start over at 1), or a revision set back by
/// hand, must not give a text another's revision. The highest revision
/// ever stored is kept in `policy_revisions_seen`; an insert continues
/// after it, and an update that does not move the revision forward (text
/// or revision set by hand) moves it on by one. This replaces
/// [`POLICY_REVISION_TRIGGER`], which saw only a text changed in place.
const POLICY_REVISION_NEVER_REUSED: &str = "
DROP TRIGGER IF EXISTS policy_revision_follows_text;
CREATE TRIGGER policy_revision_follows_text AFTER UPDATE OF toml, revision ON policy
WHEN NEW.revision <= OLD.revision
BEGIN
    UPDATE policy SET revision = OLD.revision + 1 WHERE id = NEW.id;
END;
CREATE TABLE policy_revisions_seen (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    revision INTEGER NOT NULL        -- the highest policy revision ever stored
);
INSERT INTO policy_revisions_seen (id, revision)
VALUES (1, coalesce((SELECT revision FROM policy WHERE id = 1), 0));
CREATE TRIGGER policy_revision_seen_on_update AFTER UPDATE OF revision ON policy
BEGIN
    UPDATE policy_revisions_seen SET revision = max(revision, NEW.revision) WHERE id = 1;
END;
CREATE TRIGGER policy_revision_never_reused_on_insert AFTER INSERT ON policy
BEGIN
    UPDATE policy SET revision = (SELECT revision FROM policy_revisions_seen WHERE id = 1) + 1
    WHERE id = NEW.id
      AND NEW.revision <= (SELECT revision FROM policy_revisions_seen WHERE id = 1);
    UPDATE policy_revisions_seen SET revision = max(revision, NEW.revision) WHERE id = 1;
END;";

/// The policy's compiled snapshot (`crate::policy_snapshot`), and the
/// triggers that delete it whenever the policy row is written or deleted,
/// by the verifier or by hand: it is written again after the change.
const POLICY_SNAPSHOT: &str = "
CREATE TABLE policy_snapshot (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    revision INTEGER NOT NULL,       -- the policy revision it was taken of
    format   INTEGER NOT NULL,       -- policy_snapshot::FORMAT
    body     BLOB NOT NULL
);
CREATE TRIGGER policy_snapshot_dropped_on_insert AFTER INSERT ON policy
BEGIN
    DELETE FROM policy_snapshot;
END;
CREATE TRIGGER policy_snapshot_dropped_on_update AFTER UPDATE ON policy
BEGIN
    DELETE FROM policy_snapshot;
END;
CREATE TRIGGER policy_snapshot_dropped_on_delete AFTER DELETE ON policy
BEGIN
    DELETE FROM policy_snapshot;
END;";

/// An index holding the policy's revision beside its id, so that reading
/// the revision need not read the text: SQLite stores a row's columns in
/// order, and `revision` follows `toml`, so a read of the row's revision
/// walks the text's overflow pages first (4 ms for a 12 MB text, on every
/// `attest` and every monitored verdict). Queries name it
/// ([`POLICY_REVISION`]): the planner would look the row up by its id.
const POLICY_REVISION_INDEX: &str = "CREATE INDEX policy_revision ON policy (id, revision);";

/// The policy's revision, read from [`POLICY_REVISION_INDEX`].
const POLICY_REVISION: &str = "SELECT revision FROM policy INDEXED BY policy_revision WHERE id = 1";

/// The snapshot's revision if it has format ?1 and is of the policy's
/// revision, which is read from [`POLICY_REVISION_INDEX`].
const SNAPSHOT_REVISION: &str = "SELECT s.revision FROM policy_snapshot s
    JOIN policy p INDEXED BY policy_revision ON p.id = 1 AND p.revision = s.revision
    WHERE s.id = 1 AND s.format = ?1";

/// The open state database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    /// The database file.
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the database in `dir`, migrating a
    /// version 1 database.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(DATABASE_FILE);
        let mut conn = Connection::open(&path)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Reads through a mapping of the file, not a read call per page:
        // the policy snapshot (megabytes) is read on every `attest`.
        conn.pragma_update(None, "mmap_size", 1i64 << 30)?;
        // IMMEDIATE: two verifiers opening a new state at once must not
        // both create the schema.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        match version {
            0 => tx.execute_batch(SCHEMA)?,
            1 => {
                migrate_v1(&tx)?;
                migrate_v2(&tx)?;
                migrate_v3(&tx)?;
            }
            2 => {
                migrate_v2(&tx)?;
                migrate_v3(&tx)?;
            }
            3 => migrate_v3(&tx)?,
            4..=7 => {}
            SCHEMA_VERSION => {}
            other => return Err(StoreError::SchemaVersion(other)),
        }
        if version != SCHEMA_VERSION {
            // Every version before 5 lacks the revision trigger, every one
            // before 6 the snapshot, every one before 7 the revision index,
            // every one before 8 the revisions never reused (a new state
            // too: they are not part of SCHEMA, whose statements the
            // migrations split at semicolons).
            if version < 5 {
                tx.execute_batch(POLICY_REVISION_TRIGGER)?;
            }
            if version < 6 {
                tx.execute_batch(POLICY_SNAPSHOT)?;
            }
            if version < 7 {
                tx.execute_batch(POLICY_REVISION_INDEX)?;
            }
            if version < 8 {
                tx.execute_batch(POLICY_REVISION_NEVER_REUSED)?;
            }
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        tx.commit()?;
        Ok(Self { conn, path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records a node. Fails (nothing written) if its EK is enrolled under
    /// another address or its address is taken: the caller decides first,
    /// with [`Store::node`] and [`Store::node_by_ek`], and records moves
    /// and key replacements with [`Store::replace_node`].
    pub fn enroll(&mut self, node: &NodeRecord) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        insert_node(&tx, node)?;
        tx.commit()?;
        Ok(())
    }

    /// Replaces whatever is enrolled under `node.addr` or with `node`'s EK
    /// by `node`, recording each replaced record in the key-change history
    /// as `kind`. One transaction.
    pub fn replace_node(
        &mut self,
        node: &NodeRecord,
        kind: KeyChangeKind,
    ) -> Result<(), StoreError> {
        let ek_name = node.ek_name();
        let tx = self.conn.transaction()?;
        let old: Vec<NodeRecord> = {
            let mut stmt = tx.prepare(&format!(
                "SELECT {NODE_COLUMNS} FROM nodes WHERE addr = ?1 OR ek_name = ?2"
            ))?;
            let rows = stmt.query_map(params![node.addr, ek_name], node_from_row)?;
            rows.collect::<Result<_, _>>()?
        };
        for previous in &old {
            record_change(&tx, kind, previous, Some(node))?;
            tx.execute("DELETE FROM nodes WHERE addr = ?1", [&previous.addr])?;
        }
        insert_node(&tx, node)?;
        tx.commit()?;
        Ok(())
    }

    pub fn node(&self, addr: &str) -> Result<Option<NodeRecord>, StoreError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {NODE_COLUMNS} FROM nodes WHERE addr = ?1"),
                [addr],
                node_from_row,
            )
            .optional()?)
    }

    /// The node enrolled with this EK (by TPM name), wherever it is.
    pub fn node_by_ek(&self, ek_name: &[u8]) -> Result<Option<NodeRecord>, StoreError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {NODE_COLUMNS} FROM nodes WHERE ek_name = ?1"),
                [ek_name],
                node_from_row,
            )
            .optional()?)
    }

    /// The nodes whose enrolled AK has this TPM name.
    pub fn nodes_by_ak_name(&self, ak_name: &[u8]) -> Result<Vec<NodeRecord>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {NODE_COLUMNS} FROM nodes WHERE ak_name = ?1 ORDER BY addr"
        ))?;
        let rows = stmt.query_map([ak_name], node_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY addr"))?;
        let rows = stmt.query_map([], node_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The key-change history, oldest first.
    pub fn key_changes(&self) -> Result<Vec<KeyChange>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT at, kind, old_addr, new_addr, old_ek_name, new_ek_name, old_ak_name,
                    new_ak_name FROM key_changes ORDER BY id",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok(KeyChange {
                at: row.get(0)?,
                kind: row.get(1)?,
                old_addr: row.get(2)?,
                new_addr: row.get(3)?,
                old_ek_name: row.get(4)?,
                new_ek_name: row.get(5)?,
                old_ak_name: row.get(6)?,
                new_ak_name: row.get(7)?,
            })
        })?;
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
        Ok(self.policy_with_revision()?.map(|p| p.toml))
    }

    /// The stored policy's revision, if there is a policy (without reading
    /// its text).
    pub fn policy_revision(&self) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .query_row(POLICY_REVISION, [], |r| r.get(0))
            .optional()?)
    }

    /// The stored policy with its revision, if any.
    pub fn policy_with_revision(&self) -> Result<Option<StoredPolicy>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT toml, revision FROM policy WHERE id = 1", [], |r| {
                Ok(StoredPolicy {
                    toml: r.get(0)?,
                    revision: r.get(1)?,
                })
            })
            .optional()?)
    }

    /// The policy's snapshot in `format` and the revision it was taken of,
    /// if one was taken of the policy's current revision.
    pub fn policy_snapshot(&self, format: i64) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        // One read transaction: the body is the one of that revision.
        let tx = self.conn.unchecked_transaction()?;
        let Some(revision) = tx
            .query_row(SNAPSHOT_REVISION, params![format], |r| r.get(0))
            .optional()?
        else {
            return Ok(None);
        };
        // Read straight into one buffer of its size (a column read would
        // assemble the megabytes in SQLite's buffer and copy them again).
        let blob = tx.blob_open(
            rusqlite::DatabaseName::Main,
            "policy_snapshot",
            "body",
            1,
            true,
        )?;
        let mut body = vec![0; blob.len()];
        blob.read_at_exact(&mut body, 0)?;
        Ok(Some((revision, body)))
    }

    /// Keeps `body` as the policy's snapshot of revision `revision` with
    /// text `toml`, if that is still its revision and its very text: false
    /// (nothing written) if the policy changed meanwhile, even if its
    /// revision was set back by hand.
    pub fn set_policy_snapshot(
        &self,
        revision: i64,
        toml: &str,
        format: i64,
        body: &[u8],
    ) -> Result<bool, StoreError> {
        let written = self.conn.execute(
            "INSERT OR REPLACE INTO policy_snapshot (id, revision, format, body)
             SELECT 1, ?1, ?2, ?3 FROM policy WHERE id = 1 AND revision = ?1 AND toml = ?4",
            params![revision, format, body, toml],
        )?;
        Ok(written == 1)
    }

    /// Deletes the policy's snapshot (the next load takes it again).
    pub fn drop_policy_snapshot(&self) -> Result<(), StoreError> {
        self.conn.execute("DELETE FROM policy_snapshot", [])?;
        Ok(())
    }

    /// The stored measurement log of `addr`, if any.
    pub fn measurement_log(&self, addr: &str) -> Result<Option<StoredLog>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT addr, ek_name, ak_name, reset_count, restart_count, records, log
                 FROM measurement_logs WHERE addr = ?1",
                [addr],
                |r| {
                    Ok(StoredLog {
                        addr: r.get(0)?,
                        ek_name: r.get(1)?,
                        ak_name: r.get(2)?,
                        reset_count: r.get(3)?,
                        restart_count: r.get(4)?,
                        records: r.get(5)?,
                        log: r.get(6)?,
                    })
                },
            )
            .optional()?)
    }

    /// Keeps `log` as the measurement log of its node (replacing any).
    pub fn set_measurement_log(&mut self, log: &StoredLog) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO measurement_logs
             (addr, ek_name, ak_name, reset_count, restart_count, records, log, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (addr) DO UPDATE SET ek_name = ?2, ak_name = ?3, reset_count = ?4,
                restart_count = ?5, records = ?6, log = ?7, updated_at = ?8",
            params![
                log.addr,
                log.ek_name,
                log.ak_name,
                log.reset_count,
                log.restart_count,
                log.records,
                log.log,
                now()
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The monitored verdict of `addr`, if `monitor` ever had one.
    pub fn monitor_node(&self, addr: &str) -> Result<Option<MonitorNode>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT addr, verdict, reasons, since, revoked_at FROM monitor_nodes
                 WHERE addr = ?1",
                [addr],
                |r| {
                    let reasons: String = r.get(2)?;
                    Ok(MonitorNode {
                        addr: r.get(0)?,
                        verdict: r.get(1)?,
                        reasons: serde_json::from_str(&reasons).unwrap_or_default(),
                        since: r.get(3)?,
                        revoked_at: r.get(4)?,
                    })
                },
            )
            .optional()?)
    }

    /// Keeps the monitored verdict of a node (replacing the previous one).
    pub fn set_monitor_node(&mut self, node: &MonitorNode) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO monitor_nodes (addr, verdict, reasons, since, revoked_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (addr) DO UPDATE SET verdict = ?2, reasons = ?3, since = ?4,
                revoked_at = ?5, updated_at = ?6",
            params![
                node.addr,
                node.verdict,
                reasons_json(&node.reasons),
                node.since,
                node.revoked_at,
                now()
            ],
        )?;
        Ok(())
    }

    /// Appends a pushed event; returns its id.
    pub fn record_monitor_event(&mut self, event: &MonitorEvent) -> Result<i64, StoreError> {
        self.conn.execute(
            "INSERT INTO monitor_events (addr, at_ms, record_index, pcr, name, latency_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                event.addr,
                event.at_ms,
                event.record_index,
                event.pcr,
                event.name,
                event.latency_ms
            ],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Sets the detection latency of the events `ids` that have none yet.
    pub fn set_event_latency(&mut self, ids: &[i64], latency_ms: f64) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for id in ids {
            tx.execute(
                "UPDATE monitor_events SET latency_ms = ?2 WHERE id = ?1 AND latency_ms IS NULL",
                params![id, latency_ms],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The events `addr` pushed, oldest first.
    pub fn monitor_events(&self, addr: &str) -> Result<Vec<MonitorEvent>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT addr, at_ms, record_index, pcr, name, latency_ms FROM monitor_events
             WHERE addr = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([addr], |r| {
            Ok(MonitorEvent {
                addr: r.get(0)?,
                at_ms: r.get(1)?,
                record_index: r.get(2)?,
                pcr: r.get(3)?,
                name: r.get(4)?,
                latency_ms: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records that a revocation action starts (before it runs: a crash
    /// meanwhile never makes it run twice); returns its id.
    pub fn start_revocation(
        &mut self,
        addr: &str,
        reasons: &[String],
        action: &str,
    ) -> Result<i64, StoreError> {
        self.conn.execute(
            "INSERT INTO revocations (addr, at, reasons, action) VALUES (?1, ?2, ?3, ?4)",
            params![addr, now(), reasons_json(reasons), action],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Records how a revocation action ended.
    pub fn finish_revocation(&mut self, id: i64, outcome: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE revocations SET outcome = ?2 WHERE id = ?1",
            params![id, outcome],
        )?;
        Ok(())
    }

    /// The revocations run for `addr`, oldest first.
    pub fn revocations(&self, addr: &str) -> Result<Vec<Revocation>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, addr, at, reasons, action, outcome FROM revocations
             WHERE addr = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([addr], |r| {
            let reasons: String = r.get(3)?;
            Ok(Revocation {
                id: r.get(0)?,
                addr: r.get(1)?,
                at: r.get(2)?,
                reasons: serde_json::from_str(&reasons).unwrap_or_default(),
                action: r.get(4)?,
                outcome: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets the measurement log of `addr` (the next fetch is whole).
    pub fn forget_measurement_log(&mut self, addr: &str) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM measurement_logs WHERE addr = ?1", [addr])?;
        Ok(())
    }

    /// Replaces the policy unconditionally (`policy init`).
    pub fn set_policy(&mut self, toml: &str) -> Result<i64, StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO policy (id, toml, updated_at, revision) VALUES (1, ?1, ?2, 1)
             ON CONFLICT (id) DO UPDATE SET toml = ?1, updated_at = ?2, revision = revision + 1",
            params![toml, now()],
        )?;
        let revision = tx.query_row(POLICY_REVISION, [], |r| r.get(0))?;
        tx.commit()?;
        Ok(revision)
    }

    /// Writes the policy only if it is still at `expected_revision` (a
    /// compare-and-swap: a read-modify-write never undoes a change made in
    /// between).
    pub fn set_policy_if(
        &mut self,
        expected_revision: i64,
        toml: &str,
    ) -> Result<PolicyWrite, StoreError> {
        let tx = self.conn.transaction()?;
        let changed = tx.execute(
            "UPDATE policy SET toml = ?1, updated_at = ?2, revision = revision + 1
             WHERE id = 1 AND revision = ?3",
            params![toml, now(), expected_revision],
        )?;
        if changed != 1 {
            return Ok(PolicyWrite::Conflict);
        }
        let revision = tx.query_row(POLICY_REVISION, [], |r| r.get(0))?;
        tx.commit()?;
        Ok(PolicyWrite::Written(revision))
    }
}

fn insert_node(tx: &rusqlite::Transaction<'_>, node: &NodeRecord) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO nodes
         (addr, ek_name, ek_public, ek_certificate, ak_public, ak_name, enrolled_at, activation_proven)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            node.addr,
            node.ek_name(),
            node.ek_public,
            node.ek_certificate,
            node.ak_public,
            node.ak_name,
            node.enrolled_at,
            node.activation_proven,
        ],
    )?;
    Ok(())
}

fn record_change(
    tx: &rusqlite::Transaction<'_>,
    kind: KeyChangeKind,
    old: &NodeRecord,
    new: Option<&NodeRecord>,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO key_changes
         (at, kind, old_addr, new_addr, old_ek_name, new_ek_name, old_ak_name, new_ak_name)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            now(),
            kind.as_str(),
            old.addr,
            new.map(|n| n.addr.clone()),
            old.ek_name(),
            new.map(NodeRecord::ek_name),
            old.ak_name,
            new.map(|n| n.ak_name.clone()),
        ],
    )?;
    Ok(())
}

/// Version 1 keyed nodes by address only and had no policy revision. The
/// newest enrolment of an EK is kept; older ones under other addresses
/// are recorded as dropped in the key-change history (nothing is lost).
fn migrate_v1(tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
    let old: Vec<NodeRecord> = {
        let mut stmt = tx.prepare(&format!(
            "SELECT {NODE_COLUMNS} FROM nodes ORDER BY enrolled_at DESC, addr"
        ))?;
        let rows = stmt.query_map([], node_from_row)?;
        rows.collect::<Result<_, _>>()?
    };
    tx.execute_batch(
        "DROP TABLE nodes;
         ALTER TABLE policy ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;",
    )?;
    // The v2 tables that v1 lacks (verdicts and policy already exist).
    let new_tables: String = SCHEMA
        .split_inclusive(';')
        .filter(|stmt| {
            let stmt = stmt.trim_start();
            stmt.starts_with("CREATE TABLE nodes")
                || stmt.starts_with("CREATE INDEX nodes_")
                || stmt.starts_with("CREATE TABLE key_changes")
        })
        .collect();
    tx.execute_batch(&new_tables)?;
    let mut kept: Vec<NodeRecord> = Vec::new();
    for node in old {
        match kept.iter().find(|k| k.ek_name() == node.ek_name()) {
            Some(newer) => {
                record_change(tx, KeyChangeKind::DuplicateEkDropped, &node, Some(newer))?
            }
            None => {
                insert_node(tx, &node)?;
                kept.push(node);
            }
        }
    }
    Ok(())
}

/// Version 2 had no stored measurement logs.
fn migrate_v2(tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
    let table: String = SCHEMA
        .split_inclusive(';')
        .filter(|stmt| {
            stmt.trim_start()
                .starts_with("CREATE TABLE measurement_logs")
        })
        .collect();
    tx.execute_batch(&table)?;
    Ok(())
}

/// Version 3 had no monitor history.
fn migrate_v3(tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
    let tables: String = SCHEMA
        .split_inclusive(';')
        .filter(|stmt| {
            let stmt = stmt.trim_start();
            stmt.starts_with("CREATE TABLE monitor_")
                || stmt.starts_with("CREATE INDEX monitor_")
                || stmt.starts_with("CREATE TABLE revocations")
        })
        .collect();
    tx.execute_batch(&tables)?;
    Ok(())
}

fn reasons_json(reasons: &[String]) -> String {
    serde_json::to_string(reasons).unwrap_or_else(|_| "[]".into())
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

    /// A node whose EK is derived from `addr` (one TPM per address).
    fn node(addr: &str) -> NodeRecord {
        NodeRecord {
            addr: addr.into(),
            ek_public: addr.as_bytes().to_vec(),
            ek_certificate: vec![3],
            ak_public: vec![4, 5, 6],
            ak_name: vec![0, 0x0b, 7],
            enrolled_at: 1234,
            activation_proven: true,
        }
    }

    #[test]
    fn monitor_history_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let addr = "127.0.0.1:7000";
        {
            let mut store = Store::open(dir.path()).unwrap();
            assert_eq!(store.monitor_node(addr).unwrap(), None);
            let id = store
                .record_monitor_event(&MonitorEvent {
                    addr: addr.into(),
                    at_ms: 5,
                    record_index: 40,
                    pcr: 12,
                    name: "monvm:event:1:violation:idt:gate 3".into(),
                    latency_ms: None,
                })
                .unwrap();
            store.set_event_latency(&[id], 12.5).unwrap();
            // Only the first latency counts.
            store.set_event_latency(&[id], 99.0).unwrap();
            let reasons = vec!["monvm-idt-modified".to_string()];
            store
                .set_monitor_node(&MonitorNode {
                    addr: addr.into(),
                    verdict: "untrusted".into(),
                    reasons: reasons.clone(),
                    since: 7,
                    revoked_at: Some(8),
                })
                .unwrap();
            let rev = store.start_revocation(addr, &reasons, "command").unwrap();
            store.finish_revocation(rev, "exit 0").unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let node = store.monitor_node(addr).unwrap().unwrap();
        assert_eq!(
            (node.verdict.as_str(), node.revoked_at),
            ("untrusted", Some(8))
        );
        assert_eq!(node.reasons, ["monvm-idt-modified"]);
        let events = store.monitor_events(addr).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].record_index, events[0].latency_ms),
            (40, Some(12.5))
        );
        let revocations = store.revocations(addr).unwrap();
        assert_eq!(revocations.len(), 1);
        assert_eq!(revocations[0].outcome.as_deref(), Some("exit 0"));
        assert!(store.revocations("127.0.0.1:1").unwrap().is_empty());
    }

    #[test]
    fn version_3_state_gains_the_monitor_history() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
            let v3: String = SCHEMA
                .split_inclusive(';')
                .filter(|s| {
                    let s = s.trim_start();
                    !(s.starts_with("CREATE TABLE monitor_")
                        || s.starts_with("CREATE INDEX monitor_")
                        || s.starts_with("CREATE TABLE revocations"))
                })
                .collect();
            conn.execute_batch(&v3).unwrap();
            conn.execute_batch("PRAGMA user_version = 3;").unwrap();
        }
        let mut store = Store::open(dir.path()).unwrap();
        store.start_revocation("a:1", &[], "webhook").unwrap();
        assert_eq!(store.revocations("a:1").unwrap().len(), 1);
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
    fn one_ek_is_one_node_and_replacements_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        store.enroll(&node("n:1")).unwrap();
        // The same TPM under another address, or another TPM at a taken
        // address: refused by the database itself.
        let mut relay = node("n:1");
        relay.addr = "n:2".into();
        assert!(store.enroll(&relay).is_err());
        let mut other_keys = node("n:9");
        other_keys.addr = "n:1".into();
        assert!(store.enroll(&other_keys).is_err());
        assert_eq!(store.nodes().unwrap(), vec![node("n:1")]);
        assert_eq!(
            store.node_by_ek(&node("n:1").ek_name()).unwrap(),
            Some(node("n:1"))
        );

        // Asked for explicitly: replaced, and the history says so.
        store.replace_node(&relay, KeyChangeKind::Moved).unwrap();
        assert_eq!(store.nodes().unwrap(), vec![relay.clone()]);
        let mut rekeyed = relay.clone();
        rekeyed.ak_name = vec![9];
        store
            .replace_node(&rekeyed, KeyChangeKind::KeysReplaced)
            .unwrap();
        assert_eq!(store.nodes().unwrap(), vec![rekeyed.clone()]);
        let changes = store.key_changes().unwrap();
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].kind, "moved");
        assert_eq!(changes[0].old_addr, "n:1");
        assert_eq!(changes[0].new_addr.as_deref(), Some("n:2"));
        assert_eq!(changes[1].kind, "keys-replaced");
        assert_eq!(changes[1].old_ak_name, relay.ak_name);
        assert_eq!(changes[1].new_ak_name, Some(vec![9]));
        assert_eq!(store.nodes_by_ak_name(&[9]).unwrap(), vec![rekeyed]);
    }

    #[test]
    fn policy_writes_are_compare_and_swap() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        assert_eq!(store.set_policy_if(1, "x").unwrap(), PolicyWrite::Conflict);
        assert_eq!(store.set_policy("a").unwrap(), 1);
        let read = store.policy_with_revision().unwrap().unwrap();
        assert_eq!(read.revision, 1);
        // Somebody else changes it in between: the stale write is refused.
        assert_eq!(store.set_policy("b").unwrap(), 2);
        assert_eq!(
            store.set_policy_if(read.revision, "stale").unwrap(),
            PolicyWrite::Conflict
        );
        assert_eq!(store.policy().unwrap().as_deref(), Some("b"));
        assert_eq!(
            store.set_policy_if(2, "c").unwrap(),
            PolicyWrite::Written(3)
        );
        assert_eq!(store.policy().unwrap().as_deref(), Some("c"));
    }

    /// A change of the text made past the verifier (another SQLite client)
    /// bumps the revision too; the verifier's own writes bump it once.
    #[test]
    fn any_change_of_the_policy_text_bumps_its_revision() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        assert_eq!(store.policy_revision().unwrap(), None);
        assert_eq!(store.set_policy("a").unwrap(), 1);
        assert_eq!(store.set_policy("b").unwrap(), 2);
        let other = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
        other
            .execute("UPDATE policy SET toml = 'by hand' WHERE id = 1", [])
            .unwrap();
        assert_eq!(store.policy_revision().unwrap(), Some(3));
        // Another column alone leaves it.
        other
            .execute("UPDATE policy SET updated_at = 7 WHERE id = 1", [])
            .unwrap();
        assert_eq!(store.policy_revision().unwrap(), Some(3));
        assert_eq!(
            store.set_policy_if(3, "c").unwrap(),
            PolicyWrite::Written(4)
        );
    }

    /// A state database of schema `version` (4 to 7: the current schema
    /// without what later versions added) in `dir`, holding `rows` (SQL).
    fn state_of_version(dir: &Path, version: i64, rows: &str) {
        let conn = Connection::open(dir.join(DATABASE_FILE)).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        for (since, part) in [
            (5, POLICY_REVISION_TRIGGER),
            (6, POLICY_SNAPSHOT),
            (7, POLICY_REVISION_INDEX),
        ] {
            if version >= since {
                conn.execute_batch(part).unwrap();
            }
        }
        conn.execute_batch(rows).unwrap();
        conn.pragma_update(None, "user_version", version).unwrap();
    }

    #[test]
    fn version_4_state_gains_the_policy_revision_trigger() {
        let dir = tempfile::tempdir().unwrap();
        state_of_version(
            dir.path(),
            4,
            "INSERT INTO policy VALUES (1, 'version = 1', 3, 5);",
        );
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.policy_revision().unwrap(), Some(5));
        let other = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
        other
            .execute("UPDATE policy SET toml = 'x' WHERE id = 1", [])
            .unwrap();
        assert_eq!(store.policy_revision().unwrap(), Some(6));
    }

    #[test]
    fn a_snapshot_is_handed_out_only_for_the_revision_it_was_taken_of() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        assert!(!store.set_policy_snapshot(1, "a", 1, b"no policy").unwrap());
        assert_eq!(store.policy_snapshot(1).unwrap(), None);
        let revision = store.set_policy("a").unwrap();
        assert!(
            !store
                .set_policy_snapshot(revision + 1, "a", 1, b"ahead")
                .unwrap()
        );
        // The same revision with another text: set back by hand, say.
        assert!(
            !store
                .set_policy_snapshot(revision, "b", 1, b"of b")
                .unwrap()
        );
        assert!(
            store
                .set_policy_snapshot(revision, "a", 1, b"of a")
                .unwrap()
        );
        assert_eq!(
            store.policy_snapshot(1).unwrap(),
            Some((revision, b"of a".to_vec()))
        );
        // Another format is not this one.
        assert_eq!(store.policy_snapshot(2).unwrap(), None);
        // The verifier's own writes drop it.
        let revision = store.set_policy("b").unwrap();
        assert_eq!(store.policy_snapshot(1).unwrap(), None);
        assert!(
            store
                .set_policy_snapshot(revision, "b", 1, b"of b")
                .unwrap()
        );
        assert!(matches!(
            store.set_policy_if(revision, "c").unwrap(),
            PolicyWrite::Written(_)
        ));
        assert_eq!(store.policy_snapshot(1).unwrap(), None);
    }

    #[test]
    fn a_change_made_by_hand_drops_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let other = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
        for change in [
            "UPDATE policy SET toml = 'by hand' WHERE id = 1",
            // Text and revision put back together: still another write.
            "UPDATE policy SET toml = 'a', revision = 1 WHERE id = 1",
            "UPDATE policy SET updated_at = 0 WHERE id = 1",
            "DELETE FROM policy; INSERT INTO policy VALUES (1, 'a', 0, 1)",
        ] {
            let revision = store.set_policy("a").unwrap();
            assert!(
                store
                    .set_policy_snapshot(revision, "a", 1, b"of a")
                    .unwrap(),
                "{change}"
            );
            assert!(store.policy_snapshot(1).unwrap().is_some(), "{change}");
            other.execute_batch(change).unwrap();
            assert_eq!(store.policy_snapshot(1).unwrap(), None, "{change}");
        }
    }

    #[test]
    fn version_5_state_gains_the_snapshot_table() {
        let dir = tempfile::tempdir().unwrap();
        state_of_version(
            dir.path(),
            5,
            "INSERT INTO policy VALUES (1, 'version = 1', 3, 5);",
        );
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.policy_revision().unwrap(), Some(5));
        assert!(
            store
                .set_policy_snapshot(5, "version = 1", 1, b"x")
                .unwrap()
        );
        assert!(store.policy_snapshot(1).unwrap().is_some());
        drop(store);
        // Opened again: nothing is created twice.
        let store = Store::open(dir.path()).unwrap();
        assert!(store.policy_snapshot(1).unwrap().is_some());
    }

    #[test]
    fn version_6_state_gains_the_revision_index_and_keeps_its_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        state_of_version(
            dir.path(),
            6,
            "INSERT INTO policy VALUES (1, 'version = 1', 3, 5);
             INSERT INTO policy_snapshot VALUES (1, 5, 1, x'78');",
        );
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.policy_revision().unwrap(), Some(5));
        assert_eq!(store.policy_snapshot(1).unwrap(), Some((5, b"x".to_vec())));
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.policy_snapshot(1).unwrap(), Some((5, b"x".to_vec())));
    }

    /// Review finding: a revision is never given to a second text, so a
    /// policy held by its revision (`policy_cache`) is never taken for
    /// another: not after the row was deleted and inserted again (by the
    /// verifier or by hand, also with `INSERT OR REPLACE`), nor after its
    /// revision was set back by hand.
    #[test]
    fn a_policy_revision_is_never_used_twice() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        assert_eq!(store.set_policy("a").unwrap(), 1);
        assert_eq!(store.set_policy("b").unwrap(), 2);
        let other = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
        other.execute("DELETE FROM policy", []).unwrap();
        assert_eq!(store.policy_revision().unwrap(), None);
        assert_eq!(store.set_policy("c").unwrap(), 3);
        other
            .execute_batch("DELETE FROM policy; INSERT INTO policy VALUES (1, 'd', 0, 1)")
            .unwrap();
        assert_eq!(store.policy_revision().unwrap(), Some(4));
        other
            .execute("INSERT OR REPLACE INTO policy VALUES (1, 'e', 0, 2)", [])
            .unwrap();
        assert_eq!(store.policy_revision().unwrap(), Some(5));
        // Set back by hand, with or without the text: moved on instead.
        other
            .execute(
                "UPDATE policy SET toml = 'f', revision = 3 WHERE id = 1",
                [],
            )
            .unwrap();
        assert_eq!(store.policy_revision().unwrap(), Some(6));
        other
            .execute("UPDATE policy SET revision = 1 WHERE id = 1", [])
            .unwrap();
        assert_eq!(store.policy_revision().unwrap(), Some(7));
        // Moved forward by hand: kept, and remembered.
        other
            .execute("UPDATE policy SET revision = 40 WHERE id = 1", [])
            .unwrap();
        other.execute("DELETE FROM policy", []).unwrap();
        assert_eq!(store.set_policy("g").unwrap(), 41);
        assert_eq!(
            store.set_policy_if(41, "h").unwrap(),
            PolicyWrite::Written(42)
        );
    }

    #[test]
    fn version_7_state_gains_revisions_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        state_of_version(
            dir.path(),
            7,
            "INSERT INTO policy VALUES (1, 'version = 1', 3, 5);
             INSERT INTO policy_snapshot VALUES (1, 5, 1, x'78');",
        );
        let mut store = Store::open(dir.path()).unwrap();
        assert_eq!(store.policy_revision().unwrap(), Some(5));
        assert_eq!(store.policy_snapshot(1).unwrap(), Some((5, b"x".to_vec())));
        let other = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
        other.execute("DELETE FROM policy", []).unwrap();
        assert_eq!(store.set_policy("a").unwrap(), 6);
        drop(store);
        // Opened again: nothing is created twice.
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.policy_revision().unwrap(), Some(6));
    }

    /// The revision is read from the index, never from the row, whose text
    /// comes first (a read of the row's revision walks the whole text).
    #[test]
    fn the_policy_revision_is_read_without_the_text() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        store.set_policy("version = 1").unwrap();
        let plan = |sql: &str| -> String {
            let mut stmt = store
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
            let params = stmt.parameter_count();
            let rows = stmt
                .query_map(rusqlite::params_from_iter(vec![1; params]), |r| {
                    r.get::<_, String>(3)
                })
                .unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
        };
        let revision = plan(POLICY_REVISION);
        assert!(
            revision.contains("COVERING INDEX policy_revision"),
            "{revision}"
        );
        let snapshot = plan(SNAPSHOT_REVISION);
        assert!(
            snapshot.contains("SEARCH p USING COVERING INDEX policy_revision"),
            "{snapshot}"
        );
    }

    #[test]
    fn version_1_state_is_migrated_keeping_the_newest_enrolment_of_an_ek() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
            conn.execute_batch(
                "CREATE TABLE nodes (addr TEXT PRIMARY KEY, ek_public BLOB NOT NULL,
                    ek_certificate BLOB NOT NULL, ak_public BLOB NOT NULL, ak_name BLOB NOT NULL,
                    enrolled_at INTEGER NOT NULL, activation_proven INTEGER NOT NULL);
                 CREATE TABLE verdicts (id INTEGER PRIMARY KEY AUTOINCREMENT, addr TEXT NOT NULL,
                    at INTEGER NOT NULL, verdict TEXT NOT NULL, reasons TEXT NOT NULL);
                 CREATE TABLE policy (id INTEGER PRIMARY KEY CHECK (id = 1), toml TEXT NOT NULL,
                    updated_at INTEGER NOT NULL);
                 INSERT INTO nodes VALUES ('a:1', x'01', x'', x'', x'aa', 10, 1);
                 INSERT INTO nodes VALUES ('relay:2', x'01', x'', x'', x'aa', 20, 1);
                 INSERT INTO nodes VALUES ('b:3', x'02', x'', x'', x'bb', 5, 1);
                 INSERT INTO verdicts (addr, at, verdict, reasons) VALUES ('a:1', 1, 'trusted', '[]');
                 INSERT INTO policy VALUES (1, 'version = 1', 3);
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let mut store = Store::open(dir.path()).unwrap();
        let addrs: Vec<String> = store.nodes().unwrap().into_iter().map(|n| n.addr).collect();
        assert_eq!(addrs, ["b:3", "relay:2"]);
        let changes = store.key_changes().unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].kind, "duplicate-ek-dropped");
        assert_eq!(changes[0].old_addr, "a:1");
        assert_eq!(changes[0].new_addr.as_deref(), Some("relay:2"));
        assert_eq!(
            store.last_verdict("a:1").unwrap().unwrap().verdict,
            "trusted"
        );
        let policy = store.policy_with_revision().unwrap().unwrap();
        assert_eq!((policy.toml.as_str(), policy.revision), ("version = 1", 1));
        assert_eq!(store.set_policy("version = 1\n").unwrap(), 2);
        drop(store);
        // Opening again is a no-op.
        assert_eq!(Store::open(dir.path()).unwrap().nodes().unwrap().len(), 2);
    }

    #[test]
    fn measurement_logs_are_kept_per_node_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let log = StoredLog {
            addr: "n:1".into(),
            ek_name: vec![1],
            ak_name: vec![2],
            reset_count: 7,
            restart_count: u32::MAX,
            records: 3,
            log: vec![9; 100],
        };
        {
            let mut store = Store::open(dir.path()).unwrap();
            assert_eq!(store.measurement_log("n:1").unwrap(), None);
            store.set_measurement_log(&log).unwrap();
        }
        let mut store = Store::open(dir.path()).unwrap();
        assert_eq!(store.measurement_log("n:1").unwrap(), Some(log.clone()));
        let longer = StoredLog {
            records: 4,
            log: vec![8; 130],
            ..log
        };
        store.set_measurement_log(&longer).unwrap();
        assert_eq!(store.measurement_log("n:1").unwrap(), Some(longer));
        store.forget_measurement_log("n:1").unwrap();
        assert_eq!(store.measurement_log("n:1").unwrap(), None);
    }

    #[test]
    fn version_2_state_gains_the_measurement_logs() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
            let v2: String = SCHEMA
                .split_inclusive(';')
                .filter(|s| {
                    let s = s.trim_start();
                    !(s.starts_with("CREATE TABLE measurement_logs")
                        || s.starts_with("CREATE TABLE monitor_")
                        || s.starts_with("CREATE INDEX monitor_")
                        || s.starts_with("CREATE TABLE revocations"))
                })
                .collect();
            conn.execute_batch(&v2).unwrap();
            conn.execute_batch(
                "INSERT INTO policy VALUES (1, 'version = 1', 3, 4); PRAGMA user_version = 2;",
            )
            .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.measurement_log("x").unwrap(), None);
        assert_eq!(store.policy_with_revision().unwrap().unwrap().revision, 4);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        assert!(matches!(
            Store::open(dir.path()).unwrap_err(),
            StoreError::SchemaVersion(v) if v == SCHEMA_VERSION + 1
        ));
    }
}
