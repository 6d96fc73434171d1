//! The matching engine survives its leader being killed mid-stream: no order lost or applied
//! twice (every replica's book equals a reference that applied each order once, in order),
//! and the client receives every fill.

#[test]
fn the_book_is_intact_on_every_replica_after_the_leader_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let report = matching_engine::demo::run(dir.path(), 2000, 7).unwrap();
    assert_eq!(report.orders, 2000);
    assert!(report.fills > 100, "the stream trades: {report:?}");
    assert_eq!(report.fill_events_seen, report.fill_events_expected);
}
