package main

import (
	"testing"
)

func TestAgentAddressFromEnvironment(t *testing.T) {
	tests := []struct {
		name string
		env  string
		want string
	}{
		{name: "default", env: "", want: "127.0.0.1:7701"},
		{name: "from GODWIT_AGENT", env: "10.0.0.5:7701", want: "10.0.0.5:7701"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("GODWIT_AGENT", tt.env)
			root := newRootCommand()
			got, err := root.PersistentFlags().GetString("agent")
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("--agent default = %q, want %q", got, tt.want)
			}
		})
	}
}
