CREATE TABLE "avatar_task_events" (
	"task_id" uuid NOT NULL,
	"version" integer NOT NULL,
	"state" text NOT NULL,
	"source" text NOT NULL,
	"message" text,
	"at" timestamp (3) with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "avatar_tasks" (
	"id" uuid PRIMARY KEY NOT NULL,
	"user_id" text NOT NULL,
	"state" text NOT NULL,
	"model" text NOT NULL,
	"image_url" text NOT NULL,
	"audio_url" text NOT NULL,
	"prompt" text,
	"idempotency_key" text,
	"input_hash" text NOT NULL,
	"callback_secret" text NOT NULL,
	"upstream_task_id" text,
	"result_urls" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"failure_code" text,
	"failure_message" text,
	"version" integer DEFAULT 1 NOT NULL,
	"submit_status" text DEFAULT 'queued' NOT NULL,
	"submit_attempts" integer DEFAULT 0 NOT NULL,
	"submitted_at" timestamp (3) with time zone,
	"next_check_at" timestamp (3) with time zone,
	"poll_attempts" integer DEFAULT 0 NOT NULL,
	"lease_until" timestamp (3) with time zone,
	"created_at" timestamp (3) with time zone NOT NULL,
	"updated_at" timestamp (3) with time zone NOT NULL,
	"completed_at" timestamp (3) with time zone
);
--> statement-breakpoint
ALTER TABLE "avatar_task_events" ADD CONSTRAINT "avatar_task_events_task_id_avatar_tasks_id_fk" FOREIGN KEY ("task_id") REFERENCES "public"."avatar_tasks"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "avatar_task_events_task_version_idx" ON "avatar_task_events" USING btree ("task_id","version");--> statement-breakpoint
CREATE INDEX "avatar_tasks_user_created_idx" ON "avatar_tasks" USING btree ("user_id","created_at" DESC NULLS LAST,"id" DESC NULLS LAST);--> statement-breakpoint
CREATE INDEX "avatar_tasks_user_updated_idx" ON "avatar_tasks" USING btree ("user_id","updated_at");--> statement-breakpoint
CREATE INDEX "avatar_tasks_due_idx" ON "avatar_tasks" USING btree ("next_check_at") WHERE "avatar_tasks"."state" not in ('SUCCEEDED', 'FAILED');--> statement-breakpoint
CREATE UNIQUE INDEX "avatar_tasks_user_idempotency_key_idx" ON "avatar_tasks" USING btree ("user_id","idempotency_key") WHERE "avatar_tasks"."idempotency_key" is not null;--> statement-breakpoint
CREATE UNIQUE INDEX "avatar_tasks_upstream_task_id_idx" ON "avatar_tasks" USING btree ("upstream_task_id");