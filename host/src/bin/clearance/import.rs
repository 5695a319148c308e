//! `clearance import`: loads a large set of facts into a store as one revision.
//!
//! The file is read as a stream, one delta a line (the deltas of a write: `add_entity`,
//! `add_tuple`, `set_attr`, `remove_tuple`, `remove_entity`), so its text is never held
//! whole. Every line is checked as it is read, then the deltas are applied to the store's
//! state at its last revision and the result is checked against the policy, as a host
//! checks facts on load. Only then is one change appended, at the next revision: if
//! anything is wrong nothing is written, and the error names the line. A host serving
//! the store catches up on the change as on any other host's write. On a terminal a
//! progress bar shows the bytes read and each later phase.

use clearance_core::facts::Delta;
use clearance_core::{Facts, Schema, Snapshot};
use clearance_host::clock::now_seconds;
use clearance_host::service::accounts_touched;
use clearance_host::store::checkpoint::recover;
use clearance_host::store::{Change, Checkpoint, FactStore, SqliteFile, SqliteStore, StoredPolicy};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// The longest line read: one delta, however many attributes it sets.
const MAX_LINE: usize = 1 << 20;

/// A progress bar on standard error when it is a terminal (hidden otherwise).
fn progress(total: u64, what: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what);
    bar
}

/// Reads `path` one line at a time, calling `each` with the line's number and its text
/// (trimmed, never empty), and gives the SHA-256 of the whole file.
fn each_line(
    path: &Path,
    bar: &ProgressBar,
    mut each: impl FnMut(u64, &str) -> Result<(), String>,
) -> Result<[u8; 32], String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut hash = Sha256::new();
    let mut line = Vec::new();
    let mut number = 0u64;
    let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX) + 1;
    loop {
        line.clear();
        let n = std::io::Read::take(&mut reader, limit)
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("{}:{}: {e}", path.display(), number + 1))?;
        if n == 0 {
            break;
        }
        number += 1;
        hash.update(&line);
        bar.inc(u64::try_from(n).unwrap_or(0));
        if line.len() > MAX_LINE {
            return Err(format!(
                "{}:{number}: a line longer than {MAX_LINE} bytes (one delta a line)",
                path.display()
            ));
        }
        let text = std::str::from_utf8(&line)
            .map_err(|e| format!("{}:{number}: not UTF-8: {e}", path.display()))?
            .trim();
        if !text.is_empty() {
            each(number, text)?;
        }
    }
    Ok(hash.finalize().into())
}

/// What the first pass found: the deltas' count, the accounts they touch and the
/// file's SHA-256.
struct Checked {
    count: usize,
    accounts: Vec<String>,
    sha256: [u8; 32],
    entities: usize,
    tuples: usize,
}

/// The first pass: applies each line's delta to `facts` as it is read (so no delta is
/// kept), then checks the result under `schema`. An error names the line it comes from
/// where it can. The facts after the import, at `revision`, are written to `state` as a
/// facts document, streamed (never held as text beside the facts), for the checkpoint.
fn check(
    mut facts: Facts,
    schema: Arc<Schema>,
    path: &Path,
    bar: &ProgressBar,
    (revision, state): (u64, &Path),
) -> Result<Checked, String> {
    let mut accounts = std::collections::BTreeSet::new();
    let mut count = 0usize;
    let sha256 = each_line(path, bar, |number, text| {
        let delta: Delta = serde_json::from_str(text).map_err(|e| {
            format!(
                "{}:{number}: not a delta ({e}); each line is one delta of a write, e.g. {{\"op\": \"add_entity\", \"entity\": {{\"type\": \"event\", \"id\": \"e1\", \"account\": \"a1\"}}}}",
                path.display()
            )
        })?;
        let one = std::slice::from_ref(&delta);
        accounts.extend(accounts_touched(&facts, one));
        facts
            .extend(one)
            .map_err(|e| format!("{}:{number}: {} ({})", path.display(), e.message, e.code))?;
        count += 1;
        Ok(())
    })?;
    if count == 0 {
        return Err(format!("{}: no deltas", path.display()));
    }
    bar.set_message("checking against the policy");
    by_account(&facts, &schema).map_err(|e| {
        format!(
            "{}: the facts after the import do not hold under the policy: {e}",
            path.display()
        )
    })?;
    let (entities, tuples) = (facts.entities.len(), facts.tuples.len());
    bar.set_message("writing the state for the checkpoint");
    facts.revision = revision;
    let file = std::fs::File::create(state).map_err(|e| format!("{}: {e}", state.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    serde_json::to_writer(&mut out, &facts.doc())
        .map_err(|e| format!("{}: {e}", state.display()))?;
    std::io::Write::flush(&mut out).map_err(|e| format!("{}: {e}", state.display()))?;
    Ok(Checked {
        count,
        accounts: accounts.into_iter().collect(),
        sha256,
        entities,
        tuples,
    })
}

/// The state after the import, written by [`check`] and read back once the change is
/// stored; removed when dropped, whatever happened.
struct StateFile(PathBuf);

impl Drop for StateFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Checks `facts` under `schema` one account at a time, as a snapshot build checks
/// them: nothing links two accounts (a tuple across two is refused here first, as a
/// build refuses it), so the whole holds exactly when each account's facts hold alone.
/// One account's snapshot at a time is in memory rather than the whole one's; each is
/// built only to check, and dropped.
fn by_account(facts: &Facts, schema: &Arc<Schema>) -> Result<(), String> {
    use std::collections::BTreeMap;
    let account = |key: &str| facts.entities.get(key).map(|e| e.account.as_str());
    let mut entities: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
    for (key, e) in &facts.entities {
        entities.entry(e.account.as_str()).or_default().push(key);
    }
    let mut tuples: BTreeMap<&str, Vec<&clearance_core::facts::TupleKey>> = BTreeMap::new();
    for key in facts.tuples.keys() {
        let (r, rel, s) = key;
        let (Some(ra), Some(sa)) = (account(r), account(s)) else {
            // A tuple whose end is missing: the build names it.
            tuples.entry("").or_default().push(key);
            continue;
        };
        if ra != sa {
            return Err(format!(
                "tuple `{r}#{rel}@{s}`: `{r}` and `{s}` belong to different accounts: nothing links two accounts (facts.cross_account)"
            ));
        }
        tuples.entry(ra).or_default().push(key);
    }
    let mut names: Vec<&str> = entities.keys().copied().collect();
    names.extend(tuples.keys().copied().filter(|a| !entities.contains_key(a)));
    for name in names {
        let part = Facts {
            revision: facts.revision,
            entities: entities
                .get(name)
                .into_iter()
                .flatten()
                .filter_map(|k| Some(((*k).clone(), facts.entities.get(*k)?.clone())))
                .collect(),
            tuples: tuples
                .get(name)
                .into_iter()
                .flatten()
                .filter_map(|k| Some(((*k).clone(), *facts.tuples.get(*k)?)))
                .collect(),
            omitted: facts.omitted.clone(),
            counts: Vec::new(),
        };
        Snapshot::build(Arc::clone(schema), &part).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The second pass: the deltas as one JSON array, as the store keeps them, read again
/// from the file, which must not have changed since the first.
fn deltas_text(path: &Path, first: [u8; 32], bar: &ProgressBar) -> Result<String, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    let mut text = String::with_capacity(usize::try_from(size).unwrap_or(0).saturating_add(2));
    text.push('[');
    let sha256 = each_line(path, bar, |_, line| {
        if text.len() > 1 {
            text.push(',');
        }
        text.push_str(line);
        Ok(())
    })?;
    text.push(']');
    if sha256 != first {
        return Err(format!("{} changed while it was imported", path.display()));
    }
    Ok(text)
}

/// Returns the memory the allocator holds free to the system. The C library's
/// allocator keeps the freed pages of many small allocations (the facts' strings and
/// maps) until asked; without this the import would hold the facts' pages and the
/// deltas' text at once.
fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `malloc_trim` only releases free pages of the allocator's arenas; it
        // touches no memory in use and takes no pointer.
        #[allow(unsafe_code)]
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// Opens the store `spec` names; a SQLite file that does not exist yet is created with
/// no facts, under the policy files.
async fn open(spec: &str, policies: &Path) -> Result<Arc<dyn FactStore>, String> {
    let sqlite = !clearance_host::store::postgres::is_postgres(spec);
    if sqlite && !Path::new(spec).exists() {
        let policy = StoredPolicy::of(&crate::common::sources(policies)?)?;
        let path = PathBuf::from(spec);
        let file = tokio::task::spawn_blocking(move || {
            SqliteFile::open_or_create(&path, move || Ok((Facts::default(), policy)))
                .map(|(file, _)| file)
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())??;
        return Ok(Arc::new(SqliteStore::new(file)));
    }
    clearance_host::store::open_existing(spec)
        .await
        .map_err(|e| e.to_string())
}

/// Imports the file `from` into the store `spec` names, as one revision by `author`.
pub async fn run(
    spec: &str,
    from: &Path,
    author: &str,
    policies: &Path,
) -> Result<ExitCode, String> {
    let started = std::time::Instant::now();
    let size = std::fs::metadata(from)
        .map_err(|e| format!("{}: {e}", from.display()))?
        .len();
    let store = open(spec, policies).await?;
    let recovered = recover(store.as_ref(), None).await?;
    let policy: StoredPolicy = recovered
        .policy
        .ok_or("the store keeps no policy yet: start a host on it once, then import")?;
    let schema = match recovered.schema {
        Some(s) => s,
        None => Arc::new(Schema::compile(&policy.sources).map_err(|e| e.to_string())?),
    };
    let facts = recovered.facts;
    let revision = facts.revision;
    let bar = progress(size, "reading and applying");
    let state = StateFile(std::env::temp_dir().join(format!(
        "clearance-import-{}-{revision}.json",
        std::process::id()
    )));
    let (path, shown, state_path) = (from.to_path_buf(), bar.clone(), state.0.clone());
    let checked = tokio::task::spawn_blocking(move || {
        check(facts, schema, &path, &shown, (revision + 1, &state_path))
    })
    .await
    .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    let checked = checked.map_err(|e| format!("{e}; nothing was written"))?;
    // The state's facts are dropped: hand their memory back before the deltas' text is
    // read, so the two are never held at once.
    give_back_memory();
    let bar = progress(size, "storing");
    let (path, shown, sums) = (from.to_path_buf(), bar.clone(), checked.sha256);
    let text = tokio::task::spawn_blocking(move || deltas_text(&path, sums, &shown))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{e}; nothing was written"))?;
    let name = from
        .file_name()
        .map_or_else(|| "import".to_string(), |n| n.to_string_lossy().to_string());
    let change = Change {
        revision: revision + 1,
        author: author.to_string(),
        at: now_seconds(),
        deltas: Vec::new(),
        policy: None,
        via: Some(format!("import of {name} ({} deltas)", checked.count)),
        accounts: Some(checked.accounts.clone()),
    };
    // Other hosts' appends wait meanwhile; the append itself is a compare-and-set on the
    // revision, so a write that came in since the state was read fails it whole.
    store.hold_appends().await.map_err(|e| e.to_string())?;
    let appended = store.append_serialized(change, text).await;
    let _ = store.release_appends().await;
    bar.finish_and_clear();
    appended.map_err(|e| {
        format!(
            "storing the import at revision {}: {e}; nothing was written (a write that came in meanwhile takes the revision: import again)",
            revision + 1
        )
    })?;
    give_back_memory();
    eprintln!(
        "clearance: imported {} deltas from {} into {} as revision {} in {:.1} s ({} entities, {} tuples now)",
        checked.count,
        from.display(),
        store.describe(),
        revision + 1,
        started.elapsed().as_secs_f64(),
        checked.entities,
        checked.tuples
    );
    // A checkpoint at the import's revision, so that a host starting on the store reads
    // the state rather than replaying every delta. It holds the facts but no snapshot:
    // building one needs the whole of both in memory, more than an import may take; the
    // first host to start builds it and completes the checkpoint.
    let bar = progress(size, "writing a checkpoint");
    let facts = tokio::fs::read_to_string(&state.0)
        .await
        .map_err(|e| format!("{}: {e}", state.0.display()));
    let kept = match facts {
        Ok(facts) => store
            .put_checkpoint(Arc::new(Checkpoint {
                revision: revision + 1,
                facts,
                policy,
                snapshot: Vec::new(),
            }))
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    bar.finish_and_clear();
    match kept {
        Ok(()) => eprintln!(
            "clearance: a checkpoint at revision {} (facts; the first host to start adds the snapshot)",
            revision + 1
        ),
        // The import is stored and whole: a host replays it, only slower.
        Err(e) => eprintln!(
            "clearance: no checkpoint was written ({e}): the first start replays the import"
        ),
    }
    Ok(ExitCode::SUCCESS)
}
