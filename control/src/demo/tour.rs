//! What `switchyard demo` prints: where everything listens, then a numbered
//! tour (canary, progressive rollout, automated rollback, blue-green,
//! shadow, an A/B experiment, a feature flag), each step a command to copy.

use std::fmt::Write as _;
use std::net::SocketAddr;

use super::backends::{Backend, DIVERGENT, DIVERGENT_PATH};

/// Where the demo runs, for the text.
pub struct Tour<'a> {
    /// The `switchyard` to run (under `cargo run` it is not on PATH).
    pub exe: &'a str,
    pub data: SocketAddr,
    pub admin: SocketAddr,
    pub backends: &'a [Backend],
    /// Background requests per second, if on.
    pub traffic: Option<u32>,
}

impl Tour<'_> {
    pub fn text(&self) -> String {
        let Tour {
            exe, data, admin, ..
        } = *self;
        let ctl = format!("{exe} ctl --admin {admin}");
        let shadow = self
            .backends
            .iter()
            .find(|b| b.name == DIVERGENT)
            .map_or_else(|| DIVERGENT.to_owned(), |b| b.addr.to_string());
        let backends: Vec<String> = self
            .backends
            .iter()
            .map(|b| format!("{}={}", b.name, b.addr))
            .collect();
        let mut text = format!(
            "switchyard demo: proxy on http://{data}, admin API on http://{admin}\n  \
             backends {}\n",
            backends.join(" ")
        );
        let _ = match self.traffic {
            Some(rate) => writeln!(
                text,
                "  background traffic: about {rate} requests/s over /, /api/ and shoppers on /shop/ (off: --no-traffic)"
            ),
            None => writeln!(
                text,
                "  no background traffic (--no-traffic): a rollout holds until requests come, e.g. step 1's loop"
            ),
        };
        let _ = writeln!(
            text,
            "\nOpen the console first, everything below shows there:\n    {}\n",
            crate::dashboard::url(admin)
        );
        let steps: [(&str, Vec<String>); 10] = [
            (
                "The split: route web sends 90 % to stable, 10 % to canary.",
                vec![format!(
                    "for i in $(seq 20); do curl -s http://{data}/; done | sort | uniq -c"
                )],
            ),
            (
                "A canary by hand: give it a quarter.",
                vec![format!("{ctl} set-weights web stable=75 canary=25")],
            ),
            (
                "Progressive rollout: canary 5 → 25 → 50 → 100 %, 10 s a step, judged on errors and p99, promoted at the end (about 40 s).",
                vec![
                    format!("{ctl} rollout web start"),
                    format!("{ctl} rollout web          # its step and last judgement; wait for 'completed'"),
                ],
            ),
            (
                "Back to stable, then break the canary: 20 % errors and 80 ms more latency.",
                vec![
                    format!("{ctl} rollback web"),
                    format!("{ctl} demo canary --error-rate 0.2 --latency 80ms"),
                ],
            ),
            (
                "Roll the bad canary out: the rollout rolls itself back within seconds.",
                vec![
                    format!("{ctl} rollout web start"),
                    format!("{ctl} rollout web          # 'rolled_back', and why"),
                    format!("{ctl} history              # who changed what, and the figures"),
                ],
            ),
            (
                "Heal the canary.",
                vec![format!("{ctl} demo canary --reset")],
            ),
            (
                "Blue-green: all of stable's traffic to green in one swap, and back.",
                vec![
                    format!("{ctl} flip web stable green"),
                    format!("{ctl} flip web green stable"),
                ],
            ),
            (
                "Shadow: route api (/api/) copies every request to the canary build and compares the answers; they differ on /api/prices only.",
                vec![
                    format!("curl -s http://{data}{DIVERGENT_PATH}"),
                    format!("curl -s http://{shadow}{DIVERGENT_PATH}   # what the shadow answers"),
                    format!("{ctl} shadows"),
                ],
            ),
            (
                "A/B experiment: route shop (/shop/) keeps each shopper (x-user-id) on stable or canary and counts who checks out; the readout says which converts better and how sure that is.",
                vec![
                    format!("{ctl} experiment shop"),
                    format!("{ctl} experiment shop --conclude canary   # when it says 'sure'"),
                ],
            ),
            (
                "Feature flag: new-checkout is on for 10 % of shoppers; the upstream gets x-switchyard-flags, and OpenFeature SDKs get the same answer over OFREP.",
                vec![
                    format!("curl -s -d '{{\"context\": {{\"targetingKey\": \"shopper-7\"}}}}' http://{admin}/ofrep/v1/evaluate/flags/new-checkout"),
                    format!("{ctl} flag new-checkout 50"),
                    format!("{ctl} flags                # requests per state and the guard"),
                ],
            ),
        ];
        for (number, (what, commands)) in steps.iter().enumerate() {
            let _ = writeln!(text, "{:>2}. {what}", number + 1);
            for command in commands {
                let _ = writeln!(text, "      {command}");
            }
        }
        text.push_str("\nPress Ctrl-C to stop.");
        text
    }
}
