import type { VerifiedCard } from './index.js'

export interface SearchHit {
  peerId: string
  score: number
  /** Why it matched: the fields the query terms were found in. */
  matched: string[]
}

const WEIGHTS = { capability: 10, tool: 8, tag: 5, name: 6, description: 2 } as const

function terms (text: string): string[] {
  return text.toLowerCase().split(/[^a-z0-9._-]+/).filter(t => t.length > 0)
}

/**
 * Rank verified cards against a free-text query: capability and tool names weigh most, then
 * persona name and tags, then descriptions. An exact capability name match always ranks first.
 * Every query term must match somewhere (AND), so "review typescript" narrows rather than widens.
 */
export function searchCards (cards: Iterable<VerifiedCard>, query: string): SearchHit[] {
  const wanted = terms(query)
  if (wanted.length === 0) return []
  const whole = query.trim().toLowerCase()
  const hits: SearchHit[] = []
  for (const { card } of cards) {
    const fields: Array<[keyof typeof WEIGHTS, string]> = [
      ['name', card.name],
      ['description', card.description],
      ...card.capabilities.flatMap(c => [['capability', c.name], ['description', c.description], ...c.tags.map(t => ['tag', t])] as Array<[keyof typeof WEIGHTS, string]>),
      ...card.tools.flatMap(t => [['tool', t.name], ['description', t.description]] as Array<[keyof typeof WEIGHTS, string]>)
    ]
    let score = 0
    const matched = new Set<string>()
    let all = true
    for (const term of wanted) {
      let best = 0
      for (const [kind, text] of fields) {
        const words = terms(text)
        const exact = words.includes(term)
        const partial = !exact && words.some(w => w.startsWith(term) || (term.length >= 4 && w.includes(term)))
        const weight = exact ? WEIGHTS[kind] : partial ? WEIGHTS[kind] / 2 : 0
        if (weight > 0) matched.add(kind)
        best = Math.max(best, weight)
      }
      if (best === 0) all = false
      score += best
    }
    if (!all) continue
    if (card.capabilities.some(c => c.name.toLowerCase() === whole) || card.tools.some(t => t.name.toLowerCase() === whole)) {
      score += 100
    }
    hits.push({ peerId: card.peerId, score, matched: [...matched] })
  }
  return hits.sort((a, b) => b.score - a.score || a.peerId.localeCompare(b.peerId))
}
