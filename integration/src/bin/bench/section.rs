//! Writing one benchmark's generated section of docs/BENCHMARKS.md.

use std::path::Path;

/// Replaces the generated part of the `<!-- bench:{name}:start -->` … `end` section (keeping
/// hand-written notes after `<!-- bench:{name}:notes -->`); a new section goes before the WAL
/// section, or at the end.
pub fn write_section(out: &Path, name: &str, section: &str) {
    let existing = std::fs::read_to_string(out).unwrap_or_default();
    let start = format!("<!-- bench:{name}:start -->");
    let end = format!("<!-- bench:{name}:end -->");
    let notes = format!("<!-- bench:{name}:notes -->");
    let updated = match (existing.find(&start), existing.find(&end)) {
        (Some(a), Some(b)) if a < b => {
            let inner = &existing[a..b];
            let kept = inner
                .find(&notes)
                .map(|i| format!("\n{}", &inner[i..]))
                .unwrap_or_default();
            format!(
                "{}{start}\n{section}{kept}{end}{}",
                &existing[..a],
                &existing[b + end.len()..]
            )
        }
        _ => {
            let block = format!("{start}\n{section}{end}\n\n");
            match existing.find("<!-- bench:wal:start -->") {
                Some(w) => format!("{}{block}{}", &existing[..w], &existing[w..]),
                None => format!("{existing}\n{block}"),
            }
        }
    };
    std::fs::write(out, updated).unwrap();
}

#[cfg(test)]
mod tests {
    use super::write_section;

    #[test]
    fn rewrite_keeps_notes_and_new_section_goes_before_wal() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("BENCHMARKS.md");
        std::fs::write(
            &out,
            "# B\n<!-- bench:wal:start -->\nw\n<!-- bench:wal:end -->\n",
        )
        .unwrap();
        write_section(&out, "drill", "old\n");
        let with_notes = std::fs::read_to_string(&out)
            .unwrap()
            .replace("old\n", "old\n<!-- bench:drill:notes -->\nmine\n");
        std::fs::write(&out, with_notes).unwrap();
        write_section(&out, "drill", "new\n");
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "# B\n<!-- bench:drill:start -->\nnew\n\n<!-- bench:drill:notes -->\nmine\n\
             <!-- bench:drill:end -->\n\n<!-- bench:wal:start -->\nw\n<!-- bench:wal:end -->\n"
        );
    }
}
