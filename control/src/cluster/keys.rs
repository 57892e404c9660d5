//! Where the fleet's keys live under its prefix (see the parent module for
//! why the routing state is one key).

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.trim_end_matches('/').to_owned(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The routing state: its mod revision is the fleet's revision.
    pub fn table(&self) -> String {
        format!("{}/table", self.prefix)
    }

    /// Every replica's key starts with this.
    pub fn members(&self) -> String {
        format!("{}/members/", self.prefix)
    }

    pub fn member(&self, name: &str) -> String {
        format!("{}/members/{name}", self.prefix)
    }

    /// Who runs the rollout judge: a replica's name, under its lease.
    pub fn leader(&self) -> String {
        format!("{}/leader", self.prefix)
    }

    /// Every replica's published measurements start with this.
    pub fn stats(&self) -> String {
        format!("{}/stats/", self.prefix)
    }

    pub fn stat(&self, name: &str) -> String {
        format!("{}/stats/{name}", self.prefix)
    }

    /// Every rollout record starts with this.
    pub fn rollouts(&self) -> String {
        format!("{}/rollouts/", self.prefix)
    }

    pub fn rollout(&self, route: &str) -> String {
        format!("{}/rollouts/{route}", self.prefix)
    }

    /// Every shared history entry's key starts with this.
    pub fn history(&self) -> String {
        format!("{}/history/", self.prefix)
    }

    /// A new history entry by replica `name`: unique, and in time order.
    pub fn history_entry(&self, name: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("{}/history/{nanos:020}-{name}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sit_under_the_prefix() {
        let keys = Keys::new("/switchyard/shop");
        assert_eq!(keys.table(), "/switchyard/shop/table");
        assert_eq!(keys.member("pod-7"), "/switchyard/shop/members/pod-7");
        assert!(keys.member("pod-7").starts_with(&keys.members()));
        assert!(keys.history_entry("pod-7").starts_with(&keys.history()));
        assert!(keys.stat("pod-7").starts_with(&keys.stats()));
        assert_eq!(keys.rollout("web"), "/switchyard/shop/rollouts/web");
        // Another fleet's keys never share the members' prefix.
        assert!(!Keys::new("/switchyard/shop2")
            .member("a")
            .starts_with(&keys.members()));
    }
}
