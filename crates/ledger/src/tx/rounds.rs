//! Rounds and verdicts: when a round starts, which devices are due, checkers' results, and
//! what a decided round does to a device (docs/checkers.md).

use crate::assign::{Assignment, Draw, round_seed};
use crate::events::Event;
use crate::{Ledger, Result, TxError};
use cairn_primitives::{
    Address, CheckStatus, ClassKind, Device, DeviceStatus, LeaseState, PostResults, ResultCode,
    Round, UPTIME_STEPS, Verdict, Vote, code_at,
};

/// Uptime byte meaning "not reported".
pub const NO_UPTIME: u8 = u8::MAX;

impl Ledger {
    /// At the start of each block (after an epoch close): starts a round when the block's seed
    /// says so (on average `rounds_per_epoch` per epoch, whatever the block rate: the chance
    /// is the time since the parent over the epoch, times the rounds wanted), or a join round
    /// when devices registered since the last round wait for their first (once the genesis
    /// join delay has passed since the latest registration, so that its worker is connected).
    pub(crate) fn maybe_start_round(&mut self, ts: u64) -> Result<()> {
        let g = &self.state.globals;
        let height = self.cx.height;
        let seed = round_seed(&self.cx.block_hash);
        let mut x = [0u8; 8];
        x.copy_from_slice(seed.0.get(..8).unwrap_or(&[0; 8]));
        let draw = u64::from_le_bytes(x)
            .checked_rem(self.params.epoch_ms)
            .unwrap_or(0);
        let elapsed = ts.saturating_sub(g.last_timestamp_ms);
        let spaced = ts
            >= g.last_regular_round_ms
                .saturating_add(self.params.checking.min_round_gap_ms);
        let regular = spaced
            && u128::from(draw)
                < u128::from(elapsed)
                    .saturating_mul(u128::from(self.params.checking.rounds_per_epoch));
        // A device registered in the block that started the latest round was not due in it.
        let join = g.last_registration > 0
            && g.last_registration >= g.last_round
            && ts
                >= g.last_registration_ms
                    .saturating_add(self.params.checking.join_delay_ms);
        if !(regular || join) || self.state.committee().is_none() {
            return Ok(());
        }
        let round = Round {
            epoch: g.epoch,
            ts_ms: ts,
            seed,
            join: !regular,
            since_height: g.last_round,
        };
        let mut globals = g.clone();
        globals.last_round = height;
        if regular {
            globals.last_regular_round_ms = ts;
        }
        self.state.set_globals(globals);
        self.state.set_round(height, Some(round));
        self.emit(Event::RoundStarted {
            height,
            join: !regular,
        });
        Ok(())
    }

    /// Drops rounds of epochs before `keep_from` (results for them are no longer taken).
    pub(crate) fn prune_rounds(&mut self, keep_from: u64) {
        let old: Vec<u64> = self
            .state
            .rounds
            .iter()
            .filter(|(_, r)| r.epoch < keep_from)
            .map(|(h, _)| *h)
            .collect();
        for h in old {
            self.state.set_round(h, None);
        }
    }

    /// Epoch `epoch`'s assignment (the open epoch's or the one before), built if it is not yet
    /// (once per epoch, or after a load).
    fn assignment(&self, epoch: u64) -> Result<&Assignment> {
        let c = self
            .state
            .committee_of(epoch)
            .ok_or(TxError::UnknownRound(epoch))?;
        let slot = self
            .state
            .assignments
            .get(usize::from(epoch % 2 == 1))
            .ok_or(TxError::UnknownRound(epoch))?;
        Ok(slot.get_or_init(|| {
            Assignment::build(
                c,
                self.params.checking.committee,
                c.start_height,
                self.state.devices.iter(),
            )
        }))
    }

    /// The checkers assigned to `device` this epoch (empty when there is no committee).
    pub fn checkers_of(&self, device: &Address) -> Vec<Address> {
        self.checkers_in(self.state.globals.epoch, device)
    }

    /// `checker`'s position in the committee of the epoch of the round started at `round`
    /// (how a device's results name it), while that round is kept.
    pub(crate) fn member_in_round(&self, round: u64, checker: &Address) -> Option<u8> {
        let epoch = self.state.rounds.get(&round)?.epoch;
        let c = self.state.committee_of(epoch)?;
        let i = c.members.iter().position(|m| m.checker == *checker)?;
        u8::try_from(i).ok()
    }

    /// A device's results for its latest round with the checkers' addresses (`None` for a
    /// checker whose round or committee is no longer kept), in the order they landed.
    pub fn results_of(&self, device: &Device) -> Vec<(Option<Address>, Vote)> {
        let members = self
            .state
            .rounds
            .get(&device.standing.round)
            .and_then(|r| self.state.committee_of(r.epoch))
            .map(|c| c.members.as_slice())
            .unwrap_or_default();
        device
            .standing
            .votes
            .as_slice()
            .iter()
            .map(|v| (members.get(usize::from(v.member)).map(|m| m.checker), *v))
            .collect()
    }

    /// The checkers assigned to `device` in `epoch` (the open one or the one before).
    fn checkers_in(&self, epoch: u64, device: &Address) -> Vec<Address> {
        self.state.committee_of(epoch).map_or_else(Vec::new, |c| {
            Draw::new(c, self.params.checking.committee).checkers_of(device)
        })
    }

    /// The devices assigned to `checker` in `epoch` (the open one or the one before: a round
    /// started just before an epoch closed is still answered against its own epoch's list), in
    /// assignment order (`PostResults` positions), from `first`, at most `limit`.
    pub fn devices_of(
        &self,
        checker: &Address,
        epoch: u64,
        first: usize,
        limit: usize,
    ) -> Vec<Address> {
        let Some(member) = self
            .state
            .committee_of(epoch)
            .and_then(|c| c.members.iter().position(|m| m.checker == *checker))
        else {
            return Vec::new();
        };
        match self.assignment(epoch) {
            Ok(a) => a
                .devices_of(member)
                .iter()
                .skip(first)
                .take(limit)
                .map(|(_, d)| *d)
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// `PostResults`: a checker's results for a run of its devices in one round.
    pub(crate) fn post_results(&mut self, sender: Address, p: &PostResults) -> Result<()> {
        self.cx.agreed.clear();
        if !self.state.checkers.contains_key(&sender) {
            return Err(TxError::NotChecker(sender));
        }
        let round = self
            .state
            .rounds
            .get(&p.round)
            .cloned()
            .ok_or(TxError::UnknownRound(p.round))?;
        // A round's results are taken in its epoch and the next (a round near an epoch's end
        // finishes after it), read against its epoch's assignment.
        let epoch = self.state.globals.epoch;
        if round.epoch != epoch && round.epoch.saturating_add(1) != epoch {
            return Err(TxError::WrongEpoch {
                expected: epoch,
                got: round.epoch,
            });
        }
        let member = self
            .state
            .committee_of(round.epoch)
            .and_then(|c| c.members.iter().position(|m| m.checker == sender))
            .ok_or(TxError::NotInCommittee(sender))?;
        // A committee has at most 256 members: its positions fit a byte.
        let slot = u8::try_from(member).map_err(|_| TxError::NotInCommittee(sender))?;
        let count = usize::try_from(p.count).map_err(|_| TxError::BadResults("count"))?;
        if count == 0 || count > cairn_primitives::MAX_RESULTS {
            return Err(TxError::BadResults("count must be 1-262144"));
        }
        if p.codes.len() != count.div_ceil(4) {
            return Err(TxError::BadResults("codes must hold 2 bits per device"));
        }
        if !p.uptime.is_empty() && p.uptime.len() != count {
            return Err(TxError::BadResults(
                "uptime must be empty or one per device",
            ));
        }
        if !p.cores.is_empty() && p.cores.len() != count {
            return Err(TxError::BadResults("cores must be empty or one per device"));
        }
        if let Some(u) = p
            .uptime
            .iter()
            .find(|u| u32::from(**u) > UPTIME_STEPS && **u != NO_UPTIME)
        {
            return Err(TxError::BadUptime(*u));
        }
        let first = usize::try_from(p.first).map_err(|_| TxError::BadResults("first"))?;
        let list = self.assignment(round.epoch)?.devices_of(member);
        let end = first.saturating_add(count);
        let devices: Vec<Address> = list
            .get(first..end)
            .ok_or(TxError::ResultsOutOfRange {
                first: first as u64,
                end: end as u64,
                len: list.len() as u64,
            })?
            .iter()
            .map(|(_, d)| *d)
            .collect();
        let mut results = 0u64;
        for (i, device) in devices.iter().enumerate() {
            let code = code_at(&p.codes, i);
            if code == ResultCode::NotChecked {
                if p.cores.get(i).is_some_and(|n| *n != 0) {
                    return Err(TxError::BadResults("cores are only for a CPU-class pass"));
                }
                continue;
            }
            let found = Vote {
                member: slot,
                code,
                uptime: p.uptime.get(i).copied().unwrap_or(NO_UPTIME),
                cores: p.cores.get(i).copied().unwrap_or(0),
            };
            if self.vote(sender, p.round, &round, *device, found)? {
                results = results.saturating_add(1);
            }
        }
        let mut c = self
            .state
            .checkers
            .get(&sender)
            .cloned()
            .ok_or(TxError::NotChecker(sender))?;
        if c.tally_epoch != epoch {
            c.tally_epoch = epoch;
            c.agreed = 0;
            c.posted = 0;
        }
        c.posted = c.posted.saturating_add(results);
        self.state.set_checker(sender, c);
        self.flush_agreed()?;
        self.emit(Event::ResultsPosted {
            checker: sender,
            round: p.round,
            results,
        });
        Ok(())
    }

    /// Records one checker's result for a device, and decides the round when enough agree;
    /// `false` when the result is skipped. A device slashed or retired since the round
    /// started (another checker's fraud proof may land first), one that served a lease
    /// during the round (leased just before the round's message reached its worker, or
    /// between the round and the results), and one whose results for a later round landed
    /// first (a slow or restarted checker) are skipped: its checker could not know, the
    /// result changes nothing and is not counted, and the rest of its results stand.
    /// The result names the checker by its position in the round's committee.
    fn vote(
        &mut self,
        checker: Address,
        height: u64,
        round: &Round,
        device: Address,
        found: Vote,
    ) -> Result<bool> {
        let (member, code) = (found.member, found.code);
        // A tally of a closed epoch is settled first, as any write to the device does: the
        // checking fields written below then count for the open epoch.
        let current = self.state.globals.epoch;
        let unsettled = self
            .state
            .devices
            .get(&device)
            .ok_or(TxError::UnknownDevice(device))?
            .tally_epoch
            < current;
        if unsettled {
            // Written back: a device with nothing to settle only moves its tally's epoch.
            let d = self.settled_device(&device)?;
            self.state.set_device(device, d);
        }
        let d = self
            .state
            .devices
            .get(&device)
            .ok_or(TxError::UnknownDevice(device))?;
        let s = &d.standing;
        let cpu = matches!(
            self.state.class_weights.get(usize::from(d.class)),
            Some((ClassKind::Cpu, _))
        );
        match (cpu && code == ResultCode::Pass, found.cores) {
            (true, 0) => {
                return Err(TxError::BadResults(
                    "a CPU-class pass must name the cores its answer showed (1-255)",
                ));
            }
            (false, c) if c != 0 => {
                return Err(TxError::BadResults("cores are only for a CPU-class pass"));
            }
            _ => {}
        }
        let claimed_cores = d.spec.cpu_cores;
        if d.status != DeviceStatus::Active {
            return Ok(false);
        }
        if s.registered_height >= height {
            return Err(TxError::NotDue {
                device,
                why: "it registered after the round started",
            });
        }
        // A join round is for devices with no earlier round: registered in the block that
        // started the round before (not due in it) or after.
        let earlier_round = s.round != 0 && s.round != height;
        if round.join && (s.registered_height < round.since_height || earlier_round) {
            return Err(TxError::NotDue {
                device,
                why: "a join round is only for devices registered since the round before",
            });
        }
        let leased_at_start = d
            .lease
            .and_then(|l| self.state.leases.get(&l))
            .is_some_and(|l| l.start_ms <= round.ts_ms);
        if leased_at_start || s.lease_ended_ms >= round.ts_ms {
            return Ok(false);
        }
        if s.round > height {
            // A round older than the device's latest: its verdict no longer matters.
            return Ok(false);
        }
        let mut standing = *s;
        let (mut tally_uptime, mut tally_verdict) = (d.tally_uptime, d.tally_verdict);
        if standing.round < height {
            standing.round = height;
            standing.votes.clear();
            standing.verdict = Verdict::Pending;
        }
        if standing.votes.as_slice().iter().any(|v| v.member == member) {
            return Err(TxError::DuplicateResult(device));
        }
        // The device came from the checker's own list for the round's epoch: the checker is
        // one of its `assigned` (the committee's draw, all members when fewer).
        let members = self
            .state
            .committee_of(round.epoch)
            .map(|c| c.members.as_slice())
            .unwrap_or_default();
        let assigned = usize::from(self.params.checking.committee).min(members.len());
        if !standing.votes.push(found) {
            // At most `assigned` distinct members vote, and `assigned` ≤ MAX_ASSIGNED.
            return Err(TxError::DuplicateResult(device));
        }
        let before = standing.verdict;
        if before != Verdict::Pending {
            // Decided before this result: it only counts (and is paid if it agrees).
            if agrees(code, before) {
                self.cx.agreed.push(checker);
            }
            if cpu && before == Verdict::Pass {
                standing.cores = counted_cores(standing.votes.as_slice(), claimed_cores);
            }
            self.state
                .set_checking(device, standing, tally_uptime, tally_verdict);
            return Ok(true);
        }
        let verdict = decide(standing.votes.as_slice(), assigned);
        standing.verdict = verdict;
        if verdict == Verdict::Pending {
            self.state
                .set_checking(device, standing, tally_uptime, tally_verdict);
            return Ok(true);
        }
        // Decided by this result: every result so far that agrees is paid.
        for v in standing.votes.as_slice() {
            if agrees(v.code, verdict)
                && let Some(m) = members.get(usize::from(v.member))
            {
                self.cx.agreed.push(m.checker);
            }
        }
        let uptime = median_uptime(standing.votes.as_slice());
        if verdict == Verdict::Pass {
            passed(&mut standing, &mut tally_verdict, current);
            if cpu {
                standing.cores = counted_cores(standing.votes.as_slice(), claimed_cores);
            }
            if standing.status != CheckStatus::Jailed {
                // Nothing but the checking fields changes (no lease ends, nothing is
                // slashed): written in place.
                tally_uptime = uptime;
                let status = standing.status;
                self.state
                    .set_checking(device, standing, tally_uptime, tally_verdict);
                self.emit(Event::Verdict {
                    device,
                    round: height,
                    verdict,
                    status,
                });
                return Ok(true);
            }
        }
        let mut d = self.settled_device(&device)?;
        d.standing = standing;
        d.tally_verdict = tally_verdict;
        self.apply_verdict(device, d, height, verdict, uptime)?;
        Ok(true)
    }

    /// Adds the agreeing results counted in this transaction to their checkers' tallies.
    fn flush_agreed(&mut self) -> Result<()> {
        let agreed = std::mem::take(&mut self.cx.agreed);
        if agreed.is_empty() {
            return Ok(());
        }
        let epoch = self.state.globals.epoch;
        let mut counts: std::collections::BTreeMap<Address, u64> = Default::default();
        for a in agreed {
            let e = counts.entry(a).or_default();
            *e = e.saturating_add(1);
        }
        for (a, n) in counts {
            let Some(mut c) = self.state.checkers.get(&a).cloned() else {
                continue;
            };
            if c.tally_epoch != epoch {
                c.tally_epoch = epoch;
                c.agreed = 0;
                c.posted = 0;
            }
            c.agreed = c.agreed.checked_add(n).ok_or(TxError::Overflow("agreed"))?;
            self.state.set_checker(a, c);
        }
        Ok(())
    }

    /// What a decided round does: a pass verifies the device (or frees it when its jail is
    /// over); a fail or a missed round jails it, ends its lease (refunding the customer), and
    /// past the genesis number of consecutive fails slashes it, graded.
    fn apply_verdict(
        &mut self,
        device: Address,
        mut d: cairn_primitives::Device,
        round: u64,
        verdict: Verdict,
        uptime: u8,
    ) -> Result<()> {
        let epoch = self.state.globals.epoch;
        let p = &self.params.checking;
        d.tally_uptime = uptime;
        let mut slash_bps = 0u32;
        match verdict {
            Verdict::Pass => {
                // The pass's fields were set by the caller ([`passed`]).
            }
            Verdict::Fail | Verdict::Missed => {
                let s = &mut d.standing;
                s.fails = s.fails.saturating_add(1);
                s.status = CheckStatus::Jailed;
                s.jailed_until_epoch = epoch.saturating_add(p.jail_epochs.max(1));
                if s.fails > p.slash_after_fails {
                    slash_bps = if verdict == Verdict::Missed {
                        p.slash_missed_bps
                    } else {
                        p.slash_wrong_bps
                    };
                }
                d.tally_verdict = verdict;
            }
            Verdict::Pending => return Ok(()),
        }
        let status = d.standing.status;
        let fails = d.standing.fails;
        let lease = d.lease;
        let mut slashed = cairn_primitives::Amount::ZERO;
        if slash_bps > 0 {
            slashed = d
                .pool
                .tokens
                .mul_div_floor(u64::from(slash_bps), 10_000)
                .ok_or(TxError::Overflow("slash"))?;
            d.pool.tokens = d
                .pool
                .tokens
                .checked_sub(slashed)
                .ok_or(TxError::Overflow("slash"))?;
        }
        self.state.set_device(device, d);
        if slashed > cairn_primitives::Amount::ZERO {
            self.sub_staked(slashed)?;
            self.burn_supply(slashed)?;
            self.emit(Event::SlashedForRounds {
                device,
                amount: slashed,
                fails,
            });
        }
        if status == CheckStatus::Jailed
            && let Some(id) = lease
            && self
                .state
                .leases
                .get(&id)
                .is_some_and(|l| l.state == LeaseState::Active)
        {
            self.end_lease(id, LeaseState::Failed, None)?;
        }
        self.emit(Event::Verdict {
            device,
            round,
            verdict,
            status,
        });
        Ok(())
    }
}

/// What a pass does to a device's checking fields in `epoch`: its consecutive fails reset,
/// verified (unless jailed and its jail not over), and its epoch tally a pass unless a fail
/// came first.
fn passed(s: &mut cairn_primitives::Standing, tally_verdict: &mut Verdict, epoch: u64) {
    s.fails = 0;
    s.last_pass_epoch = Some(epoch);
    if s.status != CheckStatus::Jailed || s.jailed_until_epoch <= epoch {
        s.status = CheckStatus::Verified;
    }
    if *tally_verdict == Verdict::Pending {
        *tally_verdict = Verdict::Pass;
    }
}

/// The verdict `votes` reach among `assigned` checkers, if any: an outcome needs at least two
/// agreeing results (all of them when fewer are assigned) and a majority of those assigned.
/// Fail and no answer both fail the device; which of the two it was is the majority's.
pub fn decide(votes: &[Vote], assigned: usize) -> Verdict {
    let need = (assigned / 2).saturating_add(1).max(assigned.min(2));
    let count = |f: fn(ResultCode) -> bool| votes.iter().filter(|v| f(v.code)).count();
    let pass = count(|c| c == ResultCode::Pass);
    let wrong = count(|c| c == ResultCode::Fail);
    let silent = count(|c| c == ResultCode::NoAnswer);
    if pass >= need {
        Verdict::Pass
    } else if wrong.saturating_add(silent) >= need {
        if silent > wrong {
            Verdict::Missed
        } else {
            Verdict::Fail
        }
    } else {
        Verdict::Pending
    }
}

/// Whether a result agrees with a verdict.
fn agrees(code: ResultCode, verdict: Verdict) -> bool {
    match verdict {
        Verdict::Pass => code == ResultCode::Pass,
        Verdict::Fail | Verdict::Missed => {
            matches!(code, ResultCode::Fail | ResultCode::NoAnswer)
        }
        Verdict::Pending => false,
    }
}

/// The median of the reported uptimes (the lower one of an even count; 0 when none).
fn median_uptime(votes: &[Vote]) -> u8 {
    lower_median(votes.iter().map(|v| v.uptime).filter(|u| *u != NO_UPTIME))
}

/// The cores a CPU-class device's pass counts: the median of the passing results' figures
/// (the lower one of an even count, so two checkers of three decide it as they decide the
/// verdict), at most `claimed`.
fn counted_cores(votes: &[Vote], claimed: u32) -> u32 {
    let measured = lower_median(
        votes
            .iter()
            .filter(|v| v.code == ResultCode::Pass)
            .map(|v| v.cores),
    );
    u32::from(measured).min(claimed)
}

/// The middle value (the lower one of an even count; 0 when none).
fn lower_median(values: impl Iterator<Item = u8>) -> u8 {
    // At most `MAX_ASSIGNED` results: a small array, sorted in place.
    let mut v = [0u8; cairn_primitives::MAX_ASSIGNED];
    let len = v.iter_mut().zip(values).map(|(slot, x)| *slot = x).count();
    let v = v.get_mut(..len).unwrap_or_default();
    v.sort_unstable();
    len.checked_sub(1)
        .and_then(|last| v.get(last / 2))
        .copied()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn votes(codes: &[ResultCode]) -> Vec<Vote> {
        codes
            .iter()
            .enumerate()
            .map(|(i, c)| Vote {
                member: i as u8,
                code: *c,
                uptime: 200,
                cores: 0,
            })
            .collect()
    }

    #[test]
    fn the_counted_cores_are_the_passing_results_median_within_the_claim() {
        use ResultCode::*;
        let with = |found: &[(ResultCode, u8)]| -> Vec<Vote> {
            found
                .iter()
                .enumerate()
                .map(|(i, (code, cores))| Vote {
                    member: i as u8,
                    code: *code,
                    uptime: 200,
                    cores: *cores,
                })
                .collect()
        };
        // Two passes decide: the lower figure, so one liar cannot raise it.
        assert_eq!(counted_cores(&with(&[(Pass, 2), (Pass, 200)]), 16), 2);
        // Three: the middle one, so one liar either way changes nothing.
        assert_eq!(
            counted_cores(&with(&[(Pass, 3), (Pass, 1), (Pass, 4)]), 16),
            3
        );
        assert_eq!(
            counted_cores(&with(&[(Pass, 3), (Pass, 255), (Pass, 4)]), 16),
            4
        );
        // A fail's figure does not count; the claim caps it.
        assert_eq!(
            counted_cores(&with(&[(Pass, 8), (Fail, 0), (Pass, 9)]), 4),
            4
        );
        assert_eq!(counted_cores(&with(&[(Fail, 0)]), 4), 0);
    }

    #[test]
    fn two_agreeing_results_decide_and_one_liar_of_three_changes_nothing() {
        use ResultCode::*;
        assert_eq!(decide(&votes(&[Pass]), 3), Verdict::Pending);
        assert_eq!(decide(&votes(&[Pass, Fail]), 3), Verdict::Pending);
        assert_eq!(decide(&votes(&[Pass, Fail, Pass]), 3), Verdict::Pass);
        assert_eq!(decide(&votes(&[Fail, Pass, Fail]), 3), Verdict::Fail);
        assert_eq!(decide(&votes(&[NoAnswer, NoAnswer]), 3), Verdict::Missed);
        assert_eq!(decide(&votes(&[Fail, NoAnswer]), 3), Verdict::Fail);
        // Fewer assigned: all of them.
        assert_eq!(decide(&votes(&[Pass]), 1), Verdict::Pass);
        assert_eq!(decide(&votes(&[Pass]), 2), Verdict::Pending);
        assert_eq!(decide(&votes(&[Pass, Pass]), 2), Verdict::Pass);
        // Five: three agreeing.
        assert_eq!(decide(&votes(&[Pass, Pass]), 5), Verdict::Pending);
        assert_eq!(decide(&votes(&[Pass, Pass, Pass]), 5), Verdict::Pass);
    }

    #[test]
    fn the_median_uptime_ignores_unreported_ones() {
        let mut v = votes(&[ResultCode::Pass; 3]);
        v[0].uptime = 100;
        v[1].uptime = NO_UPTIME;
        v[2].uptime = 180;
        assert_eq!(median_uptime(&v), 100);
        v[1].uptime = 150;
        assert_eq!(median_uptime(&v), 150);
        assert_eq!(median_uptime(&[]), 0);
    }
}
