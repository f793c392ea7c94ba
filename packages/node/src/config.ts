import { randomBytes } from 'node:crypto'
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { z } from 'zod'
import { InvalidArgumentError } from './errors.js'
import { PolicyConfigSchema } from './policy/policy.js'

export const CONFIG_FILE = 'config.json'

const CapabilityEntry = z.union([
  z.string(),
  z.object({ name: z.string(), description: z.string().optional(), tags: z.array(z.string()).optional() })
])

/** `<home>/<name>/config.json`: what a persona is started with unless flags or init options say otherwise. */
export const PersonaConfigSchema = z.object({
  card: z.object({
    description: z.string().max(2048).optional(),
    capabilities: z.array(CapabilityEntry).max(64).optional(),
    topics: z.array(z.string()).max(64).optional()
  }).optional(),
  listen: z.array(z.string()).optional(),
  bootstrap: z.array(z.string()).optional(),
  mdns: z.boolean().optional(),
  policy: PolicyConfigSchema.optional()
}).passthrough()

export type PersonaConfig = z.infer<typeof PersonaConfigSchema>

/** Read a persona's config; a missing file is an empty config, a broken one a clear error. */
export async function loadConfig (dataDir: string): Promise<PersonaConfig> {
  let text: string
  try {
    text = await readFile(join(dataDir, CONFIG_FILE), 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {}
    throw err
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (err) {
    throw new InvalidArgumentError(`${join(dataDir, CONFIG_FILE)} is not valid JSON: ${(err as Error).message}`)
  }
  const parsed = PersonaConfigSchema.safeParse(json)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    throw new InvalidArgumentError(`${join(dataDir, CONFIG_FILE)}: ${issue?.path.join('.')}: ${issue?.message}`)
  }
  return parsed.data
}

/** Write a persona's config atomically (temp file + rename). */
export async function saveConfig (dataDir: string, config: PersonaConfig): Promise<void> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 })
  const file = join(dataDir, CONFIG_FILE)
  const tmp = `${file}.${randomBytes(6).toString('hex')}.tmp`
  await writeFile(tmp, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 })
  await rename(tmp, file)
}

/** `name` or `name:tag,tag` (the CLI's --capability syntax). */
export function parseCapabilityFlag (value: string): { name: string, tags: string[] } {
  const [name, tags] = value.split(':', 2)
  if (name === undefined || name.trim() === '') throw new InvalidArgumentError(`--capability needs a name: ${value}`)
  return { name: name.trim(), tags: tags === undefined ? [] : tags.split(',').map(t => t.trim()).filter(Boolean) }
}
