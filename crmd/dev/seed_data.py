"""Word lists for `crmd dev seed`: kept apart so seed.py reads as the generator, not as data.

Cities carry their real DDD and a CEP range inside the city's real range, so a phone number, a
CEP and a city of one cliente agree with each other as they would in a real ERP.
"""

from __future__ import annotations

from typing import NamedTuple


def _words(text: str) -> tuple[str, ...]:
    """Comma-separated words, so the lists stay compact under the formatter."""
    return tuple(w.strip() for w in text.split(",") if w.strip())


class City(NamedTuple):
    nome: str
    uf: str
    ddd: int
    cep_min: int  # 8-digit CEP as an integer
    cep_max: int


CITIES: tuple[City, ...] = (
    City("São Paulo", "SP", 11, 1_000_000, 5_999_999),
    City("Campinas", "SP", 19, 13_010_000, 13_139_999),
    City("Santos", "SP", 13, 11_010_000, 11_099_999),
    City("Ribeirão Preto", "SP", 16, 14_010_000, 14_114_999),
    City("Rio de Janeiro", "RJ", 21, 20_010_000, 23_799_999),
    City("Niterói", "RJ", 21, 24_010_000, 24_399_999),
    City("Belo Horizonte", "MG", 31, 30_110_000, 31_999_999),
    City("Uberlândia", "MG", 34, 38_400_000, 38_415_999),
    City("Juiz de Fora", "MG", 32, 36_010_000, 36_099_999),
    City("Vitória", "ES", 27, 29_010_000, 29_099_999),
    City("Curitiba", "PR", 41, 80_010_000, 82_999_999),
    City("Londrina", "PR", 43, 86_010_000, 86_099_999),
    City("Florianópolis", "SC", 48, 88_010_000, 88_099_999),
    City("Joinville", "SC", 47, 89_200_000, 89_239_999),
    City("Porto Alegre", "RS", 51, 90_010_000, 91_999_999),
    City("Caxias do Sul", "RS", 54, 95_010_000, 95_124_999),
    City("Salvador", "BA", 71, 40_010_000, 42_599_999),
    City("Recife", "PE", 81, 50_010_000, 52_999_999),
    City("Fortaleza", "CE", 85, 60_010_000, 61_599_999),
    City("Natal", "RN", 84, 59_010_000, 59_161_999),
    City("João Pessoa", "PB", 83, 58_010_000, 58_099_999),
    City("Maceió", "AL", 82, 57_010_000, 57_099_999),
    City("Aracaju", "SE", 79, 49_010_000, 49_099_999),
    City("São Luís", "MA", 98, 65_010_000, 65_109_999),
    City("Teresina", "PI", 86, 64_000_000, 64_099_999),
    City("Belém", "PA", 91, 66_010_000, 66_999_999),
    City("Manaus", "AM", 92, 69_010_000, 69_099_999),
    City("Goiânia", "GO", 62, 74_010_000, 74_899_999),
    City("Brasília", "DF", 61, 70_040_000, 72_799_999),
    City("Campo Grande", "MS", 67, 79_002_000, 79_124_999),
    City("Cuiabá", "MT", 65, 78_005_000, 78_109_999),
)

FIRST_NAMES: tuple[str, ...] = _words(
    """
    Ana, Maria, Juliana, Fernanda, Patrícia, Aline, Camila, Amanda, Bruna, Letícia, Beatriz,
    Larissa, Gabriela, Mariana, Vanessa, Carolina, Renata, Luciana, Adriana, Sandra, Cláudia,
    Tatiane, Débora, Raquel, Isabela, Sofia, Helena, Alice, Laura, Valentina, Francisca, Antônia,
    Rosângela, Márcia, José, João, Antônio, Francisco, Carlos, Paulo, Pedro, Lucas, Luiz, Marcos,
    Luís, Gabriel, Rafael, Daniel, Marcelo, Bruno, Eduardo, Felipe, Rodrigo, Gustavo, Fernando,
    Fábio, Leonardo, Thiago, Diego, André, Ricardo, Roberto, Sérgio, Matheus, Vinícius, Henrique,
    Miguel, Arthur, Davi, Bernardo, Heitor, Otávio, Caio, Igor, Márcio, Sebastião, Raimundo
    """
)

LAST_NAMES: tuple[str, ...] = _words(
    """
    Silva, Santos, Oliveira, Souza, Rodrigues, Ferreira, Alves, Pereira, Lima, Gomes, Costa,
    Ribeiro, Martins, Carvalho, Almeida, Lopes, Soares, Fernandes, Vieira, Barbosa, Rocha, Dias,
    Nascimento, Andrade, Moreira, Nunes, Marques, Machado, Mendes, Freitas, Cardoso, Ramos,
    Gonçalves, Santana, Teixeira, Araújo, Pinto, Correia, Cavalcanti, Monteiro, Moura, Batista,
    Campos, Azevedo, Barros, Castro, Pires, Medeiros, Farias, Brito
    """
)

# Trade names and lines of business, combined as "<name> <business>" for a razão social.
COMPANY_NAMES: tuple[str, ...] = _words(
    """
    Aurora, Horizonte, Estrela, Primavera, Boa Vista, Santa Clara, São Jorge, Nova Era, Pioneira,
    Central, Paulista, Mineira, Gaúcha, Atlântico, Ipê, Jequitibá, Araucária, Sabiá, Tupã,
    Itapuã, Monte Verde, Rio Branco, Vale Verde, Bela Vista, Sol Nascente, Cruzeiro,
    Bandeirantes, Guanabara
    """
)
BUSINESSES: tuple[str, ...] = _words(
    """
    Comércio de Alimentos, Materiais de Construção, Distribuidora, Tecnologia,
    Serviços Contábeis, Transportes, Auto Peças, Confecções, Farmácia, Papelaria,
    Móveis e Decorações, Informática, Engenharia, Comércio Atacadista, Supermercado,
    Padaria e Confeitaria, Representações, Agropecuária
    """
)
COMPANY_SUFFIXES: tuple[str, ...] = ("LTDA", "LTDA", "LTDA", "ME", "EIRELI", "S.A.")

EMAIL_DOMAINS: tuple[str, ...] = _words(
    """
    gmail.com, gmail.com, gmail.com, hotmail.com, outlook.com, yahoo.com.br, uol.com.br,
    bol.com.br, terra.com.br, icloud.com
    """
)

STREET_TYPES: tuple[str, ...] = ("Rua", "Rua", "Rua", "Avenida", "Travessa", "Alameda", "Praça")
STREET_NAMES: tuple[str, ...] = _words(
    """
    XV de Novembro, Sete de Setembro, Tiradentes, Dom Pedro II, Santos Dumont, Getúlio Vargas,
    Marechal Deodoro, Barão do Rio Branco, das Flores, das Palmeiras, dos Andradas,
    Independência, Brasil, São João, Rui Barbosa, Floriano Peixoto, Duque de Caxias,
    José Bonifácio, Castro Alves, Presidente Vargas, Paraná, Bahia, Amazonas, Goiás, Pernambuco,
    dos Expedicionários, Vinte e Um de Abril, Carlos Gomes, Machado de Assis, Monteiro Lobato,
    Osvaldo Cruz, Princesa Isabel
    """
)
BAIRROS: tuple[str, ...] = _words(
    """
    Centro, Centro, Jardim América, Vila Nova, Boa Vista, Santa Cruz, São José, Jardim Europa,
    Vila Maria, Bela Vista, Cidade Nova, Santo Antônio, Liberdade, Jardim Botânico, Industrial,
    Planalto, Aeroporto, Alto da Glória, Parque das Nações, Vila Operária, Nova Esperança,
    Jardim Primavera
    """
)
COMPLEMENTS: tuple[str, ...] = ("Apto 101", "Apto 32", "Casa 2", "Sala 305", "Bloco B", "Fundos")

LOJA_NAMES: tuple[str, ...] = _words(
    """
    Loja Centro, Loja Shopping, Loja Zona Sul, Loja Zona Norte, Loja Matriz, Loja Aeroporto,
    Loja Rodoviária, Loja Praia, Loja Bairro Alto, Loja Outlet
    """
)


class ProductKind(NamedTuple):
    nome: str
    price_min_cents: int
    price_max_cents: int
    variants: tuple[str, ...]


_SIZES = ("P", "M", "G", "GG")
_COLORS = ("Azul", "Preto", "Branco", "Vermelho", "Verde", "Cinza")

PRODUCT_KINDS: tuple[ProductKind, ...] = (
    ProductKind("Camiseta Algodão", 2990, 8990, tuple(f"{c} {s}" for c in _COLORS for s in _SIZES)),
    ProductKind("Calça Jeans", 8990, 22990, ("36", "38", "40", "42", "44", "46")),
    ProductKind("Tênis Esportivo", 14990, 49990, ("37", "38", "39", "40", "41", "42", "43")),
    ProductKind("Café Torrado 500g", 1290, 3990, ("Tradicional", "Extraforte", "Gourmet")),
    ProductKind("Arroz Tipo 1 5kg", 1990, 3490, ("Branco", "Integral", "Parboilizado")),
    ProductKind("Feijão Carioca 1kg", 590, 1190, ("Tipo 1", "Tipo 2")),
    ProductKind("Azeite Extravirgem 500ml", 2490, 6990, ("Português", "Espanhol", "Grego")),
    ProductKind("Cimento CP II 50kg", 2890, 4290, ("Votoran", "Itambé", "Cauê")),
    ProductKind("Tinta Acrílica 18L", 18990, 45990, ("Branco Neve", "Gelo", "Areia", "Palha")),
    ProductKind("Parafuso Sextavado", 15, 290, ("M6", "M8", "M10", "M12")),
    ProductKind("Cabo Flexível 2,5mm 100m", 18990, 32990, ("Azul", "Preto", "Vermelho")),
    ProductKind('Notebook 15,6"', 219990, 649990, ("i3 8GB", "i5 16GB", "i7 16GB", "Ryzen 5")),
    ProductKind("Mouse Sem Fio", 3990, 19990, ("Preto", "Branco", "Cinza")),
    ProductKind("Teclado USB ABNT2", 4990, 29990, ("Padrão", "Mecânico", "Slim")),
    ProductKind("Caderno Universitário", 1290, 3990, ("1 Matéria", "10 Matérias", "Espiral")),
    ProductKind("Caneta Esferográfica", 150, 990, ("Azul", "Preta", "Vermelha")),
    ProductKind("Pastilha de Freio", 7990, 24990, ("Dianteira", "Traseira")),
    ProductKind("Óleo Motor 5W30 1L", 3490, 6990, ("Sintético", "Semissintético")),
    ProductKind("Cadeira de Escritório", 39990, 149990, ("Preta", "Cinza", "Azul")),
    ProductKind("Ração Cães Adultos 15kg", 11990, 28990, ("Carne", "Frango", "Cordeiro")),
    ProductKind("Shampoo 350ml", 990, 4990, ("Cabelos Lisos", "Cacheados", "Anticaspa")),
    ProductKind("Protetor Solar FPS 50", 3990, 8990, ("Corpo", "Facial", "Infantil")),
)
BRANDS: tuple[str, ...] = _words(
    """
    Aurora, Tropical, Brasilis, Ipanema, Serra Azul, Pantanal, Carioca, Pampa
    """
)
