CREATE TABLE "kie_create_slots" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"user_id" text NOT NULL,
	"taken_at" timestamp (3) with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "seen_callback_signatures" (
	"signature_hash" text PRIMARY KEY NOT NULL,
	"expires_at" timestamp (3) with time zone NOT NULL
);
--> statement-breakpoint
CREATE INDEX "kie_create_slots_taken_at_idx" ON "kie_create_slots" USING btree ("taken_at");--> statement-breakpoint
CREATE INDEX "seen_callback_signatures_expires_at_idx" ON "seen_callback_signatures" USING btree ("expires_at");--> statement-breakpoint
CREATE INDEX "avatar_tasks_user_active_idx" ON "avatar_tasks" USING btree ("user_id") WHERE "avatar_tasks"."state" not in ('SUCCEEDED', 'FAILED');--> statement-breakpoint
CREATE INDEX "avatar_tasks_submit_queue_idx" ON "avatar_tasks" USING btree ("user_id","created_at","id") WHERE "avatar_tasks"."state" = 'PENDING' and "avatar_tasks"."submit_status" = 'queued';