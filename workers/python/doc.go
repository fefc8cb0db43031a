// Package pythonworker holds the reference Python worker runtime
// (tproxy_worker.py, stdlib only) and its example worker
// (example_driver.py). It has no Go code of its own: its tests run the
// Python example worker behind the real Go host (host.RunManifest over
// transport.Subprocess) and check the session directory it leaves, and,
// on Linux, stop a Python worker mid-step by SIGTERM or by SIGKILLing its
// host, and check that nothing is left: no process, no directory.
//
// The Python tests run with
//
//	python3 -m unittest discover -s workers/python -v
package pythonworker
