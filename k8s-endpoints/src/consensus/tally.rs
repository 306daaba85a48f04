//! Deciding one target from the fresh views.

/// The votes on one target: every fresh view that knows its service, this replica's included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tally {
    /// Fresh views that know the target's service (abstentions included).
    pub views: usize,
    /// Views that see it up.
    pub up: usize,
    /// Views that see it down.
    pub down: usize,
    /// Views that abstain.
    pub abstain: usize,
    /// Of `down`, the views of other replicas.
    pub remote_down: usize,
}

/// What the votes decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A quorum sees it up: it is (or goes back) in the ready set.
    Up,
    /// A quorum sees it down: it leaves the ready set.
    Down,
    /// No quorum either way: it stays as last written.
    Hold,
}

impl Tally {
    /// The number of views that must agree: `configured`, else a majority of the fresh views.
    pub fn quorum(&self, configured: Option<usize>) -> usize {
        configured.unwrap_or(self.views / 2 + 1).max(1)
    }

    /// The verdict with quorum `configured` (`None`: a majority of the fresh views).
    pub fn verdict(&self, configured: Option<usize>) -> Verdict {
        let q = self.quorum(configured);
        if self.views < q {
            return Verdict::Hold;
        }
        // With a quorum below a majority both sides may reach it: the larger one wins.
        match (self.down >= q, self.up >= q) {
            (true, false) => Verdict::Down,
            (false, true) => Verdict::Up,
            (true, true) if self.down > self.up => Verdict::Down,
            (true, true) if self.up > self.down => Verdict::Up,
            _ => Verdict::Hold,
        }
    }

    /// Whether the voting views disagree.
    pub fn disagrees(&self) -> bool {
        self.up > 0 && self.down > 0
    }

    /// `2/3 see it down`-style text for messages: the side with more votes first.
    pub fn agreement(&self) -> String {
        let (n, side) = if self.down >= self.up {
            (self.down, "down")
        } else {
            (self.up, "up")
        };
        let abstaining = if self.abstain > 0 {
            format!(", {} abstaining", self.abstain)
        } else {
            String::new()
        };
        format!("{n}/{} see it {side}{abstaining}", self.views)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(views: usize, up: usize, down: usize) -> Tally {
        Tally {
            views,
            up,
            down,
            abstain: views - up - down,
            remote_down: 0,
        }
    }

    #[test]
    fn a_majority_of_fresh_views_decides_and_a_split_holds() {
        // One replica decides alone, as without consensus.
        assert_eq!(t(1, 0, 1).verdict(None), Verdict::Down);
        assert_eq!(t(1, 1, 0).verdict(None), Verdict::Up);
        // Three replicas: the leader alone does not remove.
        assert_eq!(t(3, 2, 1).verdict(None), Verdict::Up);
        assert_eq!(t(3, 1, 2).verdict(None), Verdict::Down);
        // Two fresh views (one replica dead) must both agree.
        assert_eq!(t(2, 1, 1).verdict(None), Verdict::Hold);
        assert_eq!(t(2, 0, 2).verdict(None), Verdict::Down);
        // Abstentions count as views but not as votes.
        assert_eq!(t(3, 1, 1).verdict(None), Verdict::Hold);
        assert_eq!(t(3, 0, 2).verdict(None), Verdict::Down);
        // Nothing known holds.
        assert_eq!(t(0, 0, 0).verdict(None), Verdict::Hold);
    }

    #[test]
    fn a_configured_quorum_holds_when_too_few_views_are_fresh() {
        assert_eq!(t(1, 0, 1).verdict(Some(2)), Verdict::Hold);
        assert_eq!(t(2, 0, 2).verdict(Some(2)), Verdict::Down);
        assert_eq!(
            t(5, 3, 2).verdict(Some(2)),
            Verdict::Up,
            "the larger side wins"
        );
        assert_eq!(t(5, 2, 3).verdict(Some(2)), Verdict::Down);
        assert_eq!(t(5, 2, 2).verdict(Some(2)), Verdict::Hold);
        assert_eq!(t(3, 2, 1).quorum(Some(3)), 3);
        assert_eq!(t(3, 2, 1).verdict(Some(3)), Verdict::Hold);
    }

    #[test]
    fn agreement_reads_well() {
        assert_eq!(t(3, 1, 2).agreement(), "2/3 see it down");
        assert_eq!(t(3, 3, 0).agreement(), "3/3 see it up");
        assert_eq!(t(3, 1, 1).agreement(), "1/3 see it down, 1 abstaining");
        assert!(t(3, 1, 1).disagrees() && !t(3, 3, 0).disagrees());
    }
}
