/**
 * What a comparison's reference names: a value of the compared axis (a strategy, architecture or dataset
 * plugin), written as the plugin's name or as `name(key=value, ...)` to single one configuration of that
 * plugin out. Shared by the experiment check (core/config/experiment.ts) and the summary
 * (core/experiment/comparison.ts).
 */
export type ComparedAxis = 'strategy' | 'architecture' | 'dataset';
export const COMPARED_AXES: readonly ComparedAxis[] = ['strategy', 'architecture', 'dataset'];

/** A reference as written: `name` or `name(key=value, ...)` (values as YAML scalars or JSON). */
export interface ReferenceSelector {
  name: string;
  settings: [string, string][];
}

/** Reads `name` / `name(k=v, k2=v2)`; null where the text is not of that form. */
export function parseReference(text: string): ReferenceSelector | null {
  const m = /^\s*([^()\s]+)\s*(?:\((.*)\))?\s*$/.exec(text);
  if (!m) return null;
  const settings: [string, string][] = [];
  if (m[2] !== undefined && m[2].trim() !== '') {
    for (const part of m[2].split(/,(?![^[\]]*\])/)) {
      const eq = part.indexOf('=');
      if (eq <= 0) return null;
      settings.push([part.slice(0, eq).trim(), part.slice(eq + 1).trim()]);
    }
  }
  return { name: m[1]!, settings };
}

/** A settings value as the selector compares it: numbers and booleans as written, arrays and objects as JSON. */
const settingText = (v: unknown): string => (typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v));

/** Whether a trial's plugin choice on `axis` ({ name, settings }) is the one `sel` names. */
export function selects(sel: ReferenceSelector, choice: { name?: unknown; settings?: Record<string, unknown> } | undefined): boolean {
  if (!choice || choice.name !== sel.name) return false;
  return sel.settings.every(([k, v]) => choice.settings !== undefined && Object.hasOwn(choice.settings, k) && settingText(choice.settings[k]).replace(/\s+/g, '') === v.replace(/\s+/g, ''));
}

