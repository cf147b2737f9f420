package fsm

import (
	"fmt"
	"time"

	"github.com/godwit/godwit/scheduler/state"
)

// SetImages replaces the list of images a node holds with what its agent
// reports (each image's Node is set to the command's). Names must be
// unique and non-empty. Result value: ImagesOutcome.
type SetImages struct {
	Node   string        `json:"node"`
	Images []state.Image `json:"images,omitempty"`
	At     time.Time     `json:"at"`
}

// ImagesOutcome is the result value of SetImages: the image names the
// node gained and lost, sorted.
type ImagesOutcome struct {
	Added   []string `json:"added,omitempty"`
	Removed []string `json:"removed,omitempty"`
}

func (SetImages) Type() CommandType { return TypeSetImages }
func (c SetImages) when() time.Time { return c.At }

func (c SetImages) apply(tx *state.Txn) (any, error) {
	if _, err := lookupNode(tx, c.Node); err != nil {
		return nil, err
	}
	seen := make(map[string]bool, len(c.Images))
	for _, img := range c.Images {
		if img.Name == "" {
			return nil, fmt.Errorf("images of node %q: an image has no name: %w", c.Node, ErrInvalid)
		}
		if seen[img.Name] {
			return nil, fmt.Errorf("images of node %q: %q listed twice: %w", c.Node, img.Name, ErrInvalid)
		}
		seen[img.Name] = true
	}
	added, removed, err := tx.SetImages(c.Node, c.Images)
	if err != nil {
		return nil, err
	}
	for _, name := range added {
		tx.Emit(state.EventImageAdded, c.Node, "", name)
	}
	for _, name := range removed {
		tx.Emit(state.EventImageRemoved, c.Node, "", name)
	}
	return ImagesOutcome{Added: added, Removed: removed}, nil
}
