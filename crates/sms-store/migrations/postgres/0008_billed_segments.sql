-- The segments the gateway billed for each recipient at the send, so that a receipt
-- naming the segments the vendor billed (Aliyun's `sms_size`) can be compared with it.
-- NULL: not known (recorded before this column, or a receipt kept before its send).
ALTER TABLE deliveries ADD COLUMN billed_segments integer CHECK (billed_segments >= 0);
