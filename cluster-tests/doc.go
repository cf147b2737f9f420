// Package clustertests holds godwit's multi-node tests: agents running in
// network namespaces of one machine (devcluster), real runc and CRIU,
// clients on other hosts, faults. The package has tests only; they need
// root and run with `make test`.
package clustertests
