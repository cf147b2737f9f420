// Package mountinfo reads /proc/self/mountinfo (see proc(5)): the mounts
// of this process's mount namespace, with mount points unescaped. It is
// the one parser of that file for the agent and its packages.
package mountinfo
