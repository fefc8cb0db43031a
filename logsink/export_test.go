package logsink

import "time"

// SetNow replaces the clock Files uses for records with a zero Timestamp.
func SetNow(f *Files, now func() time.Time) { f.now = now }
