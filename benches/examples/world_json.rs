//! Writes a generated world (`small`, `medium` or `large`) as a facts file that
//! `clearance serve --seed` reads: with the demo data's directory, the server then holds
//! the demo accounts beside the generated ones, so a soak (`CLEARANCE_SOAK_URL`) drives
//! the demo's principals in a world of that size.
//!
//! `cargo run --release -p clearance-benches --example world_json -- medium seeds/medium.json`
//!
//! With an `.ndjson` name it writes one delta a line instead, for `clearance import`.

// A benchmark: it indexes its own generated inputs, and criterion's macros define
// undocumented functions; neither is reachable from outside input.
#![allow(clippy::indexing_slicing, missing_docs)]

use clearance_benches::{scales, world};
use clearance_core::facts::Delta;

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (Some(name), Some(out)) = (args.next(), args.next()) else {
        return Err("usage: world_json SCALE OUT.json".into());
    };
    let scale = scales()
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| format!("no scale `{name}` (small, medium, large)"))?;
    let w = world(scale, 7);
    if out.ends_with(".ndjson") {
        // One delta a line, entities before the tuples naming them: what `clearance
        // import` reads.
        use std::io::Write;
        let doc = w.facts.to_doc();
        let file = std::fs::File::create(&out).map_err(|e| format!("{out}: {e}"))?;
        let mut file = std::io::BufWriter::new(file);
        let deltas = doc
            .entities
            .into_iter()
            .map(|entity| Delta::AddEntity { entity })
            .chain(
                doc.tuples
                    .into_iter()
                    .map(|tuple| Delta::AddTuple { tuple }),
            );
        for d in deltas {
            serde_json::to_writer(&mut file, &d).map_err(|e| e.to_string())?;
            file.write_all(b"\n").map_err(|e| e.to_string())?;
        }
        file.flush().map_err(|e| e.to_string())?;
    } else {
        let text = serde_json::to_string(&w.facts.to_doc()).map_err(|e| e.to_string())?;
        std::fs::write(&out, text).map_err(|e| format!("{out}: {e}"))?;
    }
    eprintln!(
        "{out}: {} entities, {} tuples",
        w.facts.entities.len(),
        w.facts.tuples.len()
    );
    Ok(())
}
