package fsm

import (
	"encoding/json"
	"fmt"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

// PlaceContainers entries are most of the log, and every replica decodes
// each one: they are written in MessagePack, with the codec raft's own
// transport uses (Nomad and Consul write their whole logs with it), which
// decodes a batch in about half the time encoding/json takes; decoding
// was a fifth of the cost of applying a placement (bench/scheduler).
// Every other command stays JSON, which an operator can read in a log
// dump. The field names are the JSON tags either way.
//
// An entry's payload tells its encoding by its first byte: a command is
// an object, which JSON opens with '{' and MessagePack with a map header
// (0x80-0x8f, 0xde or 0xdf), a byte no JSON text starts with. Entries
// written before PlaceContainers changed encoding are JSON and decode as
// they did.

// msgpackCommands are the commands Encode writes in MessagePack.
var msgpackCommands = map[CommandType]bool{TypePlaceContainers: true}

// msgpackHandle is the MessagePack codec's configuration: time.Time as
// MessagePack's timestamp extension. Handles are safe for concurrent use
// once configured.
var msgpackHandle = &codec.MsgpackHandle{WriteExt: true}

// encodePayload returns cmd's payload: MessagePack or JSON.
func encodePayload(cmd Command) ([]byte, error) {
	if !msgpackCommands[cmd.Type()] {
		return json.Marshal(cmd)
	}
	var payload []byte
	err := codec.NewEncoderBytes(&payload, msgpackHandle).Encode(cmd)
	return payload, err
}

// decodeAs decodes payload, MessagePack or JSON, as a C.
func decodeAs[C Command](payload []byte) (Command, error) {
	var c C
	var err error
	if isMsgpackMap(payload) {
		err = codec.NewDecoderBytes(payload, msgpackHandle).Decode(&c)
	} else {
		err = json.Unmarshal(payload, &c)
	}
	if err != nil {
		return nil, fmt.Errorf("decode %s command: %w: %v", c.Type(), ErrBadCommand, err)
	}
	return c, nil
}

// isMsgpackMap reports whether payload opens with a MessagePack map
// header.
func isMsgpackMap(payload []byte) bool {
	if len(payload) == 0 {
		return false
	}
	b := payload[0]
	return b&0xf0 == 0x80 || b == 0xde || b == 0xdf
}
