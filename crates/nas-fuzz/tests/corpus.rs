//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`, seeds plus every input a
//! campaign found interesting or crashing) through the harnesses, on stable, in every test run.
//! A missing corpus folder fails loudly: this test never passes by checking nothing.

use std::path::Path;

#[test]
fn every_corpus_input_runs_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    for (name, harness) in nas_fuzz::TARGETS {
        let dir = root.join(name);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus {} missing: {e}", dir.display()));
        let mut count = 0;
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| harness(&data));
            assert!(outcome.is_ok(), "{name}: {} panics", path.display());
            count += 1;
        }
        assert!(count > 0, "corpus {} is empty", dir.display());
    }
}
