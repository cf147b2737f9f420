// Package clictx owns the CLI's contexts: named cluster targets (a
// scheduler's address and the TLS files to reach it with) kept in one
// file, one of them current, like kubectl's contexts. `godwit dev up` and
// `godwit agent --dev` save theirs and make it current, so that plain
// `godwit ...` commands talk to that cluster; `godwit context` lists,
// shows, switches and removes them.
//
// The file is $GODWIT_CONFIG when set, else
// $XDG_CONFIG_HOME/godwit/contexts.json, else
// ~/.config/godwit/contexts.json. It is JSON, mode 0600 (it names the
// private key of a client certificate), and every change is a
// read-modify-write under an advisory lock on its directory, written to a
// temporary file and renamed over the old one: a reader sees the old file
// or the new one, never half of either, and two processes saving at once
// (two dev clusters coming up) both keep their change.
package clictx
