//! Parsing OpenMetrics text with a parser no one here wrote: the Python `prometheus_client`
//! package's OpenMetrics parser (`just test-deps` installs it).

use std::io::Write as _;
use std::process::{Command, Stdio};

/// One sample: its name (with `_total` and the like), labels, value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: serde_json::Map<String, serde_json::Value>,
    pub value: f64,
}

const PARSE: &str = r#"
import json, sys
try:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
except ImportError:
    sys.stderr.write("MISSING prometheus_client\n")
    sys.exit(3)
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append({"family": family.name, "type": family.type, "unit": family.unit,
                    "name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;

/// The samples of `text`, parsed by prometheus_client (which rejects anything that is not
/// valid OpenMetrics, a missing `# EOF` included). Panics, saying what to install, when Python
/// or the package is missing.
pub fn parse(text: &str) -> Vec<Sample> {
    let mut child = Command::new("python3")
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}): install Python 3 and `just test-deps`")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("MISSING prometheus_client"),
        "the Python package prometheus_client is missing: run `just test-deps` \
         (python3 -m pip install prometheus_client)"
    );
    assert!(
        out.status.success(),
        "prometheus_client refused the exposition: {stderr}\n{text}"
    );
    let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    all.into_iter()
        .map(|v| Sample {
            name: v["name"].as_str().unwrap().to_string(),
            labels: v["labels"].as_object().unwrap().clone(),
            value: v["value"].as_f64().unwrap(),
        })
        .collect()
}

/// The value of the sample `name` whose labels include `labels`.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).and_then(|x| x.as_str()) == Some(v))
        })
        .map(|s| s.value)
}
