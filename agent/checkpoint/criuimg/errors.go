package criuimg

import "errors"

var (
	// ErrNotImageDir means the directory holds no CRIU dump: it has no
	// pstree.img, the first image CRIU needs.
	ErrNotImageDir = errors.New("not a CRIU image directory (no pstree.img); pass the checkpoint's images directory")

	// ErrMalformedImage means an image file is truncated, too large, of
	// the wrong kind, or does not decode. The checkpoint cannot be trusted
	// and should not be restored.
	ErrMalformedImage = errors.New("malformed CRIU image")
)
