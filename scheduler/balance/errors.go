package balance

import "errors"

var (
	// ErrInvalidPolicy: a Policy value is out of its range, or two values
	// contradict each other (a trigger below the target). Validate's and
	// Set's errors wrap it and say which key to change.
	ErrInvalidPolicy = errors.New("invalid balance policy")
	// ErrUnknownKey: `balance set` named a key the policy does not have.
	ErrUnknownKey = errors.New("unknown balance policy key")
	// ErrInvalidInput: Plan was given an input it cannot plan on (no
	// time).
	ErrInvalidInput = errors.New("invalid balance input")
)
