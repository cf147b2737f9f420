// Package names holds the rules for names an operator gives, shared by the
// agent (which accepts them) and the checkpoint format (which must refuse
// a manifest carrying a name the agent would never have made).
package names

import "regexp"

// containerName: letters, digits, '_', '.' and '-', starting with a letter
// or digit, at most 63 characters (a hostname label's limit, since the
// name is the container's default hostname).
var containerName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)

// ValidContainer reports whether name is a valid container name.
func ValidContainer(name string) bool { return containerName.MatchString(name) }

// ContainerRule says what a valid container name looks like, for errors.
const ContainerRule = "use up to 63 letters, digits, '_', '.' and '-', starting with a letter or digit"
