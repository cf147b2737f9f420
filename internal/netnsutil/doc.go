// Package netnsutil owns godwit's network-namespace plumbing, shared by
// the agent's container networking and the development cluster: running
// code on an OS thread switched into a namespace (and back), opening the
// caller's namespace, and creating, identifying and removing namespaces
// pinned by a bind mount on a path, the way `ip netns` pins them.
//
// Go schedules goroutines on any thread, and a network namespace belongs
// to a thread, so everything here runs on a locked thread and never lets
// another goroutine run on a thread left in a foreign namespace.
package netnsutil
