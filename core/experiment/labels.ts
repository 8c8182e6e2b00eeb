/**
 * How a trial record names itself: its key (trial_id, or the index where records predate ids), its
 * resolved settings (the `settings` JSON), and its configuration as its label says it, without the seed.
 * Shared by the comparison, the plots and the README tables.
 */
type Value = string | number | null;

/** A record's trial key: its trial_id, or its trial index for records from before ids existed. */
export function trialKey(row: { trial?: unknown; trial_id?: unknown }): string {
  return typeof row.trial_id === 'string' && row.trial_id !== '' ? row.trial_id : String(row.trial ?? '');
}

/** A trial row's resolved settings (its `settings` JSON); {} where the cell is absent or unreadable. */
export function rowSettings(row: Record<string, Value | undefined>): Record<string, any> {
  try {
    return typeof row.settings === 'string' ? (JSON.parse(row.settings) as Record<string, any>) : {};
  } catch {
    return {};
  }
}

/**
 * A trial's configuration as its label writes it (the axis values as written), without the seed and the
 * parts `drop` matches; the strategy's name where the label says nothing else.
 */
export function configurationLabel(row: Record<string, Value | undefined>, drop: RegExp[] = []): string {
  const label = rowSettings(row).label;
  let text = typeof label === 'string' && label !== 'default' ? label : String(row.strategy ?? '');
  for (const d of [/(^|\s)seed=\S+/g, ...drop]) text = text.replace(d, ' ');
  return text.replace(/\s+/g, ' ').trim() || String(row.strategy ?? 'trial');
}
