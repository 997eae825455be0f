{#- Stands in for an extract-and-load tool: the raw tables exist before dbt runs. -#}
{% macro create_raw_tables() %}
create schema if not exists raw;
create table if not exists raw.books as
    select * from (values
        (1, 'The Left Hand of Darkness', 'Le Guin', 1969),
        (2, 'Kindred', 'Butler', 1979),
        (3, 'Solaris', 'Lem', 1961),
        (4, 'The Dispossessed', 'Le Guin', 1974)
    ) as t(book_id, title, author, published_year);
create table if not exists raw.members as
    select * from (values
        (10, 'Ana', '2023-01-05'::date, 'adult'),
        (11, 'Ben', '2023-03-17'::date, 'junior'),
        (12, 'Chidi', '2024-02-01'::date, 'adult')
    ) as t(member_id, first_name, joined_on, membership);
create table if not exists raw.loans as
    select *, now() as _loaded_at from (values
        (100, 1, 10, '2024-05-01'::date, '2024-05-15'::date),
        (101, 2, 11, '2024-05-03'::date, null),
        (102, 3, 12, '2024-05-04'::date, '2024-06-20'::date),
        (103, 1, 11, '2024-05-20'::date, null),
        (104, 4, 10, '2024-06-01'::date, '2024-06-10'::date)
    ) as t(loan_id, book_id, member_id, borrowed_on, returned_on);
{% endmacro %}
