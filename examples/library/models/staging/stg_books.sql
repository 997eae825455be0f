select book_id, title, author, published_year from {{ source('raw', 'books') }}
