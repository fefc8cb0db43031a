// Package logsink is where a session's events and metrics end up.
//
// Both sides of tproxy talk to a Sink: a worker's steps emit into one, and
// the host persists what the worker streams through one. The sinks here are
//
//   - Files, the session directory (README, "The session directory"):
//     events.jsonl and metrics.jsonl, one JSON object per line, with a
//     sequence number shared by both files so that they merge back into
//     the order of emission;
//   - Console, one readable line per record for watching a run live;
//   - Memory, which keeps the records for tests and later inspection;
//   - Multi, which fans a record out to several of them.
//
// A host typically writes to the files and the terminal at once, flushes at
// step boundaries, and closes the files when the run ends:
//
//	files, err := logsink.OpenDir(sessionDir, sessionID)
//	if err != nil {
//		return err
//	}
//	defer files.Close()
//	sink := logsink.Multi(files, logsink.NewConsole(os.Stderr))
//	_ = sink.Event(ctx, tproxy.Event{Name: "run_start", Timestamp: time.Now()})
//	// … hand sink to host.WithSink; after each step:
//	if err := sink.Flush(); err != nil {
//		return err // e.g. the disk is full; Files keeps failing from now on
//	}
//	return files.Close()
//
// Files, Console and Memory write records as they get them: wrap a sink
// with Mask to mask a session's secrets in everything it records.
package logsink
