package main

import (
	"context"

	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// The fake agent's side of the memory pages that stream and post-copy
// move beside the checkpoint (migrate/driver_pages.go): a healthy agent
// answers at once.

func (a *fakeAgent) MigrateReceivePages(context.Context, *pb.MigratePagesRequest) (*pb.MigrateReply, error) {
	return a.reply("receive pages")
}

func (a *fakeAgent) MigrateServePages(context.Context, *pb.MigratePagesRequest) (*pb.MigrateReply, error) {
	return a.reply("serve pages")
}
