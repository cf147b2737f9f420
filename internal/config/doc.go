// Package config owns the daemons' configuration files: `godwit agent
// --config FILE` and `godwit scheduler --config FILE`.
//
// A file is one YAML mapping whose keys are the command's long flag
// names, without the dashes in front, and whose values are what the flag
// takes: a string, a number, a boolean, or, for a flag that can be
// repeated or takes a comma-separated list (join, label), a YAML list.
//
//	name: node1
//	data-dir: /var/lib/godwit/agent
//	join: [10.0.0.1:7712, 10.0.0.2:7712]
//
// A flag given on the command line wins over the file, so that an
// operator can override one setting for one start without editing it.
// An unknown key is an error that names it and lists the valid ones: a
// misspelt key silently ignored would leave a daemon running with a
// default nobody chose. The file is applied to the command's flags
// before the command runs (AddFlag installs it as the command's
// PreRunE), so the command reads its settings the same way whether they
// came from the file or the command line, and its required flags may
// come from either.
package config
